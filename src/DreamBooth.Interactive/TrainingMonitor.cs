using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using Microsoft.Data.Analysis;
using Microsoft.DotNet.Interactive;
using DreamBooth.Training;
using Microsoft.DotNet.Interactive.Formatting;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Interactive;

/// <summary>One logged optimizer step, as the monitor plots it.</summary>
public sealed record TrainingSample(int Step, int TotalSteps, int Epoch, int TotalEpochs, double Loss,
    double? InstanceLoss = null, double? PriorLoss = null, double LearningRate = 0, double? TextEncoderLearningRate = null);

/// <summary>
/// The live view of a training run in a notebook (modelled on ML.NET AutoML's NotebookMonitor): it consumes the
/// trainer's progress, keeps a log (<see cref="Log"/> as a DataFrame), and keeps ONE displayed output up to date
/// in place — progress, ETA, the loss curve (raw + smoothed, instance vs prior), the learning rate, the latest
/// preview images and messages (saves, cancellation). Updates are throttled to <see cref="UpdateInterval"/> so a
/// fast loop does not flood the front end; <see cref="Complete"/> always redraws.
/// </summary>
public sealed class TrainingMonitor : IProgress<TrainingSample>, IProgress<TrainingEvent>
{
#pragma warning disable CA2255 // registration list of this assembly's formatters, read by Formatters.Register
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Init() => Formatters.Add(() => Formatters.Html<TrainingMonitor>(m => m.ToHtml()));

    readonly object _lock = new();
    readonly List<TrainingSample> _samples = [];
    readonly List<double> _smoothed = [];
    readonly List<double> _seconds = [];
    readonly List<(string Caption, Image<Rgb24> Image)> _previews = [];
    readonly List<string> _messages = [];
    readonly List<(int Step, int Epoch, double? Distance)> _likeness = [];
    readonly Stopwatch _clock = new();
    DisplayedValue? _display;
    CancellationTokenSource? _cts;
    long _lastUpdateTicks = long.MinValue;
    double _ema;
    int _emaCount;
    bool _finished;

    public TrainingMonitor(string title = "DreamBooth training", TimeSpan? updateInterval = null, double smoothing = 0.9, int epochs = 0)
    {
        Epochs = epochs;
        if (smoothing is < 0 or >= 1) throw new DreamBoothException($"monitor smoothing = {smoothing}: expected ≥ 0 and < 1");
        Title = title;
        UpdateInterval = updateInterval ?? TimeSpan.FromSeconds(3);
        Smoothing = smoothing;
    }

    public string Title { get; }
    /// <summary>Epochs of the run (for "epoch e / E"; 0 = unknown).</summary>
    public int Epochs { get; set; }

    /// <summary>A monitor for a trainer's config: its name, its epochs.</summary>
    public static TrainingMonitor For(TrainingConfig config, TimeSpan? updateInterval = null) =>
        new($"DreamBooth training: {config.Name} → {config.OutputDir}", updateInterval, epochs: config.Epochs);

    /// <summary>
    /// The trainer's events: steps feed the log and chart (epochs shown 1-based), saves/TE freeze/messages go to the
    /// message list, previews to the images, Cancelled/Completed set the final status.
    /// </summary>
    public void Report(TrainingEvent e)
    {
        ArgumentNullException.ThrowIfNull(e);
        static double? Finite(double v) => double.IsFinite(v) ? v : null;
        switch (e.Kind)
        {
            case TrainingEventKind.Step:
                Report(new TrainingSample(e.Step, e.TotalSteps, e.Epoch + 1, Epochs, e.Loss, Finite(e.InstanceLoss), Finite(e.PriorLoss), e.LrUnet, e.LrTextEncoder));
                break;
            case TrainingEventKind.Started:
                AddMessage($"started at step {e.Step}/{e.TotalSteps}: {e.Message}");
                break;
            case TrainingEventKind.Saved:
                AddMessage($"saved after epoch {e.Epoch}: {e.Path}" + (e.Message is null ? "" : $" ({e.Message})"));
                break;
            case TrainingEventKind.TextEncoderFrozen:
            case TrainingEventKind.Message:
                AddMessage(e.Message ?? e.Kind.ToString());
                break;
            case TrainingEventKind.Preview:
                if (e.Path is { } p && File.Exists(p))
                {
                    using var image = Image.Load<Rgb24>(p);
                    AddPreview($"epoch {e.Epoch}: {System.IO.Path.GetFileName(p)}" + (e.Likeness is double l ? $" · likeness {l.ToString("0.00", CultureInfo.InvariantCulture)}" : ""), image);
                }
                if (e.Likeness is not null || e.Message?.StartsWith("preview likeness", StringComparison.Ordinal) == true)
                {
                    lock (_lock) _likeness.Add((e.Step, e.Epoch, e.Likeness));
                    AddMessage(e.Message ?? "preview likeness");
                }
                break;
            case TrainingEventKind.Cancelled:
                AddMessage($"cancelled at step {e.Step}: checkpoint and training state saved to {e.Path}");
                Complete($"interrupted at step {e.Step} (epoch {e.Epoch + 1}): saved {e.Path}; run the resume cell to continue");
                break;
            case TrainingEventKind.Completed:
                Complete($"finished: {e.Step}/{e.TotalSteps} steps, {e.Epoch} epochs, last loss {e.Loss.ToString("G4", CultureInfo.InvariantCulture)}");
                break;
        }
    }
    /// <summary>Least time between two in-place updates of the displayed output.</summary>
    public TimeSpan UpdateInterval { get; set; }
    /// <summary>Weight of the exponential moving average of the smoothed loss curve (TensorBoard's slider).</summary>
    public double Smoothing { get; }
    /// <summary>"running", "finished", "cancelled …": shown at the top.</summary>
    public string Status { get; private set; } = "waiting for the first step";
    /// <summary>How many times the displayed output was updated in place.</summary>
    public int Updates { get; private set; }
    /// <summary>The id of the displayed output (null until <see cref="Show"/> ran inside a notebook).</summary>
    public string? DisplayId => _display?.DisplayId;
    public IReadOnlyList<TrainingSample> Samples { get { lock (_lock) return _samples.ToList(); } }
    public IReadOnlyList<string> Messages { get { lock (_lock) return _messages.ToList(); } }
    /// <summary>The previews' mean face likeness distance per preview epoch (with <c>preview_likeness</c>; null: no face).</summary>
    public IReadOnlyList<(int Step, int Epoch, double? Distance)> Likeness { get { lock (_lock) return _likeness.ToList(); } }

    /// <summary>The previews' face likeness per step (lower = more like the instance photos), with the 0.6 same-person line.</summary>
    public PlotlyFigure LikenessChart()
    {
        lock (_lock)
        {
            var x = _likeness.Select(l => (double)l.Step).ToList();
            var series = new List<Charts.Series>
            {
                new("preview likeness (face distance)", x, _likeness.Select(l => l.Distance ?? double.NaN).ToList(), Color: "#9467bd", Width: 3),
            };
            if (x.Count > 0) series.Add(new("same person (0.6)", [x[0], x[^1]], [0.6, 0.6], Color: "#888888", Dash: "dot"));
            return Charts.Lines("preview likeness to the instance photos (lower = more alike)", "step", "face distance", series);
        }
    }

    /// <summary>
    /// The token to pass to the trainer: cancelled when the notebook cell is interrupted (the kernel's token of the
    /// cell that called <see cref="Show"/>), or when a step reaches <see cref="StopAtStep"/>. The trainer answers
    /// cancellation by saving a checkpoint and its state, so an interrupted run resumes where it stopped.
    /// </summary>
    public CancellationToken CancellationToken { get { lock (_lock) return (_cts ??= new CancellationTokenSource()).Token; } }

    /// <summary>Interrupts the run once a reported step reaches this value (what pressing Stop does, at a known step: for demos and tests).</summary>
    public int? StopAtStep { get; set; }

    /// <summary>
    /// Displays the monitor in the current cell and keeps that output for the in-place updates. Uses
    /// <c>KernelInvocationContext.Current.Display</c>, which returns the very <see cref="DisplayedValue"/> it
    /// published (the <c>object.Display()</c> extension of this .NET Interactive version returns a different one,
    /// whose updates would target an id the front end never saw). Outside a notebook it does nothing.
    /// </summary>
    public TrainingMonitor Show()
    {
        var context = KernelInvocationContext.Current;
        if (context is null) return this;
        lock (_lock)
        {
            var cts = _cts ??= new CancellationTokenSource();
            context.CancellationToken.Register(() => { try { cts.Cancel(); } catch (ObjectDisposedException) { } });
            _display = context.Display(this, HtmlFormatter.MimeType);
            _lastUpdateTicks = _clock.ElapsedTicks;
        }
        return this;
    }

    public void Report(TrainingSample value)
    {
        ArgumentNullException.ThrowIfNull(value);
        lock (_lock)
        {
            if (!_clock.IsRunning) _clock.Start();
            _emaCount++;
            _ema = Smoothing * _ema + (1 - Smoothing) * value.Loss;
            _samples.Add(value);
            _smoothed.Add(_ema / (1 - Math.Pow(Smoothing, _emaCount)));
            _seconds.Add(_clock.Elapsed.TotalSeconds);
            Status = $"running: step {value.Step}/{value.TotalSteps}, epoch {value.Epoch}/{value.TotalEpochs}";
            if (StopAtStep is int stop && value.Step >= stop && _cts is { IsCancellationRequested: false } cts)
            {
                _messages.Add($"[{_clock.Elapsed:hh\\:mm\\:ss}] interrupt requested at step {value.Step}");
                cts.Cancel();
            }
        }
        MaybeUpdate(force: false);
    }

    /// <summary>A preview image (kept: the latest per caption).</summary>
    public void AddPreview(string caption, Image image)
    {
        var copy = image.CloneAs<Rgb24>();
        lock (_lock)
        {
            int i = _previews.FindIndex(p => p.Caption == caption);
            if (i >= 0) { _previews[i].Image.Dispose(); _previews[i] = (caption, copy); }
            else _previews.Add((caption, copy));
        }
        MaybeUpdate(force: false);
    }

    /// <summary>A line under the chart (a checkpoint saved, a resume, a warning).</summary>
    public void AddMessage(string message)
    {
        lock (_lock) _messages.Add($"[{_clock.Elapsed:hh\\:mm\\:ss}] {message}");
        MaybeUpdate(force: false);
    }

    /// <summary>Sets the final status ("finished", "cancelled: …") and redraws whatever the throttle says.</summary>
    public void Complete(string status = "finished")
    {
        lock (_lock) { Status = status; _clock.Stop(); _finished = true; }
        MaybeUpdate(force: true);
    }

    void MaybeUpdate(bool force)
    {
        DisplayedValue? display;
        lock (_lock)
        {
            display = _display;
            if (display is null) return;
            long now = _clock.ElapsedTicks;
            if (!force && _lastUpdateTicks != long.MinValue && (now - _lastUpdateTicks) < UpdateInterval.TotalSeconds * Stopwatch.Frequency) return;
            _lastUpdateTicks = now;
            Updates++;
        }
        display.Update(this);
    }

    /// <summary>Estimated time left, from the mean time per step so far.</summary>
    public TimeSpan? Eta
    {
        get
        {
            lock (_lock)
            {
                if (_samples.Count < 2) return null;
                var last = _samples[^1];
                double perStep = _seconds[^1] / Math.Max(1, last.Step - _samples[0].Step + 1);
                return TimeSpan.FromSeconds(perStep * Math.Max(0, last.TotalSteps - last.Step));
            }
        }
    }

    /// <summary>Every logged step: step, epoch, loss, smoothed loss, instance and prior loss, learning rates, seconds since the start.</summary>
    public DataFrame Log
    {
        get
        {
            lock (_lock)
            {
                return new DataFrame(
                    new Int32DataFrameColumn("step", _samples.Select(s => s.Step)),
                    new Int32DataFrameColumn("epoch", _samples.Select(s => s.Epoch)),
                    new DoubleDataFrameColumn("loss", _samples.Select(s => s.Loss)),
                    new DoubleDataFrameColumn("loss_smoothed", _smoothed),
                    new DoubleDataFrameColumn("instance_loss", _samples.Select(s => s.InstanceLoss)),
                    new DoubleDataFrameColumn("prior_loss", _samples.Select(s => s.PriorLoss)),
                    new DoubleDataFrameColumn("lr", _samples.Select(s => s.LearningRate)),
                    new DoubleDataFrameColumn("te_lr", _samples.Select(s => s.TextEncoderLearningRate)),
                    new DoubleDataFrameColumn("seconds", _seconds));
            }
        }
    }

    /// <summary>The loss chart: raw (faint), smoothed, instance and prior losses (smoothed), LR on the right axis.</summary>
    public PlotlyFigure LossChart(int maxPoints = 1500)
    {
        lock (_lock)
        {
            int n = _samples.Count;
            int stride = Math.Max(1, (n + maxPoints - 1) / Math.Max(1, maxPoints));
            var idx = Enumerable.Range(0, n).Where(i => i % stride == 0 || i == n - 1).ToList();
            var x = idx.Select(i => (double)_samples[i].Step).ToList();
            var series = new List<Charts.Series>
            {
                new("loss", x, idx.Select(i => _samples[i].Loss).ToList(), Color: "#1f77b4", Opacity: 0.3),
                new("loss (smoothed)", x, idx.Select(i => _smoothed[i]).ToList(), Color: "#1f77b4", Width: 3),
            };
            if (_samples.Any(s => s.InstanceLoss is not null))
                series.Add(new("instance (smoothed)", x, Smooth(idx, s => s.InstanceLoss), Color: "#2ca02c", Width: 2));
            if (_samples.Any(s => s.PriorLoss is not null))
                series.Add(new("prior (smoothed)", x, Smooth(idx, s => s.PriorLoss), Color: "#d62728", Width: 2));
            series.Add(new("learning rate", x, idx.Select(i => _samples[i].LearningRate).ToList(), Color: "#7f7f7f", Dash: "dot", YAxis: "y2"));
            return Charts.Lines("loss", "step", "loss (MSE)", series, y2Title: "learning rate");
        }
    }

    List<double> Smooth(List<int> idx, Func<TrainingSample, double?> pick)
    {
        var all = new double[_samples.Count];
        double ema = 0; int count = 0;
        for (int i = 0; i < _samples.Count; i++)
        {
            if (pick(_samples[i]) is double v) { count++; ema = Smoothing * ema + (1 - Smoothing) * v; }
            all[i] = count == 0 ? double.NaN : ema / (1 - Math.Pow(Smoothing, count));
        }
        return idx.Select(i => all[i]).ToList();
    }

    public string ToHtml()
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder("<div class=\"dreambooth-training-monitor\">");
        lock (_lock)
        {
            sb.Append("<h3 style=\"margin:0.2em 0\">").Append(Html.Encode(Title)).Append("</h3>");
            sb.Append("<div><b>").Append(Html.Encode(Status)).Append("</b></div>");
            if (_samples.Count > 0)
            {
                var last = _samples[^1];
                double fraction = (double)last.Step / Math.Max(1, last.TotalSteps);
                sb.Append(string.Create(inv, $"<div style=\"background:#ddd;width:100%;max-width:600px;height:14px;border-radius:3px\"><div style=\"background:#1f77b4;width:{fraction * 100:F1}%;height:14px;border-radius:3px\"></div></div>"));
                var eta = Eta;
                sb.Append(Html.KeyValueTable(
                [
                    ("step", $"{last.Step} / {last.TotalSteps} ({fraction:P0})"),
                    ("epoch", $"{last.Epoch} / {last.TotalEpochs}"),
                    ("elapsed", TimeSpan.FromSeconds(_seconds[^1]).ToString(@"hh\:mm\:ss", inv)),
                    ("ETA", eta is { } e ? e.ToString(@"hh\:mm\:ss", inv) : "…"),
                    ("loss (smoothed)", _smoothed[^1].ToString("G4", inv) + $" (last {last.Loss.ToString("G4", inv)})"),
                    ("instance / prior loss", $"{Show(last.InstanceLoss)} / {Show(last.PriorLoss)}"),
                    ("learning rate (UNet / text encoder)", $"{last.LearningRate.ToString("G3", inv)} / {Show(last.TextEncoderLearningRate, "G3")}"),
                ]));
            }
        }
        // the final picture stands alone (saved notebooks keep only it), so it carries plotly.js itself
        if (Samples.Count > 0) sb.Append(Charts.ToHtml(LossChart(), embedScript: _finished));
        if (Likeness.Count > 0) sb.Append(Charts.ToHtml(LikenessChart()));
        lock (_lock)
        {
            if (_previews.Count > 0)
            {
                sb.Append("<div><b>latest previews</b></div><div style=\"display:flex;flex-wrap:wrap;gap:6px\">");
                foreach (var (caption, image) in _previews)
                    sb.Append("<figure style=\"margin:0\">").Append(Html.Img(image, caption, maxWidth: 256))
                      .Append("<figcaption style=\"font-size:85%\">").Append(Html.Encode(caption)).Append("</figcaption></figure>");
                sb.Append("</div>");
            }
            if (_messages.Count > 0)
                sb.Append("<pre style=\"font-size:85%;max-height:10em;overflow:auto\">").Append(Html.Encode(string.Join("\n", _messages.TakeLast(12)))).Append("</pre>");
        }
        return sb.Append("</div>").ToString();
    }

    static string Show(double? v, string format = "G4") => v is double d ? d.ToString(format, CultureInfo.InvariantCulture) : "—";

    public override string ToString() => Status;
}
