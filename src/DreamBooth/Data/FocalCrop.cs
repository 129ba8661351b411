using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace DreamBooth.Data;

/// <summary>How the entropy detector scores a window.</summary>
public enum EntropyMode
{
    /// <summary>Shannon entropy −Σ p·log2 p of the 8-bit grey histogram (what A1111's commented-out code intended).</summary>
    Shannon,
    /// <summary>A1111's actual score: Floyd–Steinberg 1-bit dither, then −Σ log2 p (no p factor): favours the most lopsided window.</summary>
    A1111,
}

/// <summary>
/// Weights of the focal-point detectors. <see cref="Recipe"/> is the DreamBooth recipe (face 1, nothing else);
/// <see cref="A1111"/> is the A1111 UI default (face 0.9, edges 0.5, entropy 0.15). A detector with weight 0 does not run.
/// </summary>
public sealed record FocalCropOptions
{
    public double FaceWeight { get; init; } = 1.0;
    public double EdgesWeight { get; init; }
    public double EntropyWeight { get; init; }
    public EntropyMode EntropyMode { get; init; } = EntropyMode.Shannon;
    /// <summary>Upscaling by more than this factor adds a warning to the report (Lanczos3 is used either way).</summary>
    public double UpscaleWarning { get; init; } = 1.1;
    /// <summary>When false, images that would need upscaling beyond <see cref="UpscaleWarning"/> are skipped instead.</summary>
    public bool AllowUpscale { get; init; } = true;

    public static FocalCropOptions Recipe { get; } = new();
    public static FocalCropOptions A1111 { get; } = new() { FaceWeight = 0.9, EdgesWeight = 0.5, EntropyWeight = 0.15, EntropyMode = EntropyMode.A1111 };
}

/// <summary>Where the focal point came from: each detector's points, its effective (normalised) weight, and the result.</summary>
public sealed record FocalAnalysis(
    IReadOnlyList<PointF> FacePoints, IReadOnlyList<PointF> EdgePoints, IReadOnlyList<PointF> EntropyPoints,
    double FaceWeight, double EdgesWeight, double EntropyWeight, PointF FocalPoint, bool Fallback);

/// <summary>A crop decision in source pixels and the exact output size.</summary>
public sealed record CropPlan(Rectangle SourceRect, int OutputWidth, int OutputHeight, double Scale, FocalAnalysis Analysis)
{
    public bool Upscales => Scale > 1.0 + 1e-9;
}

/// <summary>
/// A1111's auto focal-point crop without its bugs: the image is scaled to <b>cover</b> the target (never padded),
/// the focal point is the weighted mean of the face, edge and entropy centroids, a window of the target's aspect is
/// centred on it and clamped inside the image, and when nothing is found the crop is centred.
/// All coordinates are in the image's own pixels; analysis runs on a copy at most 512 px on its long side.
/// </summary>
public static class FocalCrop
{
    const int AnalysisSide = 512;

    /// <summary>Plans a crop of <paramref name="image"/> (restricted to <paramref name="within"/> if given) to exactly targetW×targetH.</summary>
    public static CropPlan Plan(Image<Rgb24> image, IReadOnlyList<FaceBox> faces, int targetW, int targetH, FocalCropOptions options, Rectangle? within = null)
    {
        if (targetW <= 0 || targetH <= 0) throw new DreamBoothException($"focal crop: target size must be positive, got {targetW}x{targetH}");
        var area = within ?? new Rectangle(0, 0, image.Width, image.Height);
        area.Intersect(new Rectangle(0, 0, image.Width, image.Height));
        if (area.Width <= 0 || area.Height <= 0) throw new DreamBoothException("focal crop: empty source region");
        // cover: the smaller crop side ratio decides; the window is the largest of the target's aspect inside the area
        double scale = Math.Max((double)targetW / area.Width, (double)targetH / area.Height);
        int cw = Math.Min(area.Width, (int)Math.Round(targetW / scale));
        int ch = Math.Min(area.Height, (int)Math.Round(targetH / scale));
        var analysis = Analyse(image, area, faces, cw, ch, options);
        int x = (int)Math.Round(analysis.FocalPoint.X - cw / 2.0);
        int y = (int)Math.Round(analysis.FocalPoint.Y - ch / 2.0);
        x = Math.Clamp(x, area.X, area.Right - cw);
        y = Math.Clamp(y, area.Y, area.Bottom - ch);
        return new CropPlan(new Rectangle(x, y, cw, ch), targetW, targetH, scale, analysis);
    }

    /// <summary>Cuts the planned rectangle and resizes it to the exact output size with Lanczos3.</summary>
    public static Image<Rgb24> Apply(Image<Rgb24> image, CropPlan plan)
    {
        var part = CropResize(image, plan.SourceRect, plan.SourceRect.Width, plan.SourceRect.Height);
        if (plan.SourceRect.Width != plan.OutputWidth || plan.SourceRect.Height != plan.OutputHeight)
            part.Mutate(c => c.Resize(new ResizeOptions { Size = new Size(plan.OutputWidth, plan.OutputHeight), Mode = ResizeMode.Stretch, Sampler = KnownResamplers.Lanczos3 }));
        return part;
    }

    /// <summary>The focal point of a region: detector centroids combined with weights normalised over the detectors that returned points.</summary>
    public static FocalAnalysis Analyse(Image<Rgb24> image, Rectangle area, IReadOnlyList<FaceBox> faces, int cropW, int cropH, FocalCropOptions options)
    {
        var facePts = options.FaceWeight > 0
            ? faces.Where(f => area.Contains((int)f.FocalPoint.X, (int)f.FocalPoint.Y)).Select(f => f.FocalPoint).ToList()
            : [];
        List<PointF> edgePts = [], entropyPts = [];
        if (options.EdgesWeight > 0 || options.EntropyWeight > 0)
        {
            double a = Math.Min(1.0, (double)AnalysisSide / Math.Max(area.Width, area.Height));
            int aw = Math.Max(1, (int)Math.Round(area.Width * a)), ah = Math.Max(1, (int)Math.Round(area.Height * a));
            var grey = Grey(image, area, aw, ah);
            PointF Back(PointF p) => new((float)(p.X / a + area.X), (float)(p.Y / a + area.Y));
            if (options.EdgesWeight > 0)
                edgePts = CornerPoints(grey, aw, ah).Select(Back).ToList();
            if (options.EntropyWeight > 0)
            {
                var e = EntropyPoint(grey, aw, ah, (int)Math.Round(cropW * a), (int)Math.Round(cropH * a), options.EntropyMode);
                if (e is { } p) entropyPts.Add(Back(p));
            }
        }
        double wf = facePts.Count > 0 ? options.FaceWeight : 0;
        double we = edgePts.Count > 0 ? options.EdgesWeight : 0;
        double wn = entropyPts.Count > 0 ? options.EntropyWeight : 0;
        double total = wf + we + wn;
        if (total <= 0)
        {
            var centre = new PointF(area.X + area.Width / 2f, area.Y + area.Height / 2f);
            return new FocalAnalysis(facePts, edgePts, entropyPts, 0, 0, 0, centre, Fallback: true);
        }
        wf /= total; we /= total; wn /= total;
        static PointF Centroid(List<PointF> pts) => pts.Count == 0 ? default : new PointF(pts.Average(p => p.X), pts.Average(p => p.Y));
        var cf = Centroid(facePts); var ce = Centroid(edgePts); var cn = Centroid(entropyPts);
        var focal = new PointF((float)(cf.X * wf + ce.X * we + cn.X * wn), (float)(cf.Y * wf + ce.Y * we + cn.Y * wn));
        return new FocalAnalysis(facePts, edgePts, entropyPts, wf, we, wn, focal, Fallback: false);
    }

    /// <summary>Crop + resize without cloning the whole image first (Clone copies every pixel before processing).</summary>
    internal static Image<Rgb24> CropResize(Image<Rgb24> image, Rectangle area, int w, int h)
    {
        var part = new Image<Rgb24>(area.Width, area.Height);
        image.ProcessPixelRows(part, (src, dst) =>
        {
            for (int y = 0; y < area.Height; y++)
                src.GetRowSpan(area.Y + y).Slice(area.X, area.Width).CopyTo(dst.GetRowSpan(y));
        });
        if (w != area.Width || h != area.Height) part.Mutate(c => c.Resize(w, h, KnownResamplers.Triangle));
        return part;
    }

    /// <summary>ITU-R 601 luma ("L" in PIL) of a region resized to aw×ah.</summary>
    static byte[] Grey(Image<Rgb24> image, Rectangle area, int aw, int ah)
    {
        using var small = CropResize(image, area, aw, ah);
        var g = new byte[aw * ah];
        small.ProcessPixelRows(acc =>
        {
            for (int y = 0; y < ah; y++)
            {
                var row = acc.GetRowSpan(y);
                for (int x = 0; x < aw; x++)
                    g[y * aw + x] = (byte)((row[x].R * 299 + row[x].G * 587 + row[x].B * 114 + 500) / 1000);
            }
        });
        return g;
    }

    /// <summary>
    /// Shi–Tomasi corners as A1111 asks OpenCV for them: bottom 10% painted #999 (watermarks), up to 100 corners,
    /// quality 0.04 of the strongest, minimum distance 6% of the short side, 3×3 Sobel and 3×3 block.
    /// </summary>
    internal static List<PointF> CornerPoints(byte[] grey, int w, int h)
    {
        if (w < 5 || h < 5) return [];
        var g = new float[w * h];
        int band = (int)(h * 0.9);
        for (int i = 0; i < g.Length; i++) g[i] = i / w >= band ? 0x99 : grey[i];
        var ixx = new float[w * h]; var iyy = new float[w * h]; var ixy = new float[w * h];
        for (int y = 1; y < h - 1; y++)
            for (int x = 1; x < w - 1; x++)
            {
                int i = y * w + x;
                float gx = g[i - w + 1] + 2 * g[i + 1] + g[i + w + 1] - g[i - w - 1] - 2 * g[i - 1] - g[i + w - 1];
                float gy = g[i + w - 1] + 2 * g[i + w] + g[i + w + 1] - g[i - w - 1] - 2 * g[i - w] - g[i - w + 1];
                ixx[i] = gx * gx; iyy[i] = gy * gy; ixy[i] = gx * gy;
            }
        var response = new float[w * h];
        float max = 0;
        for (int y = 2; y < h - 2; y++)
            for (int x = 2; x < w - 2; x++)
            {
                float a = 0, b = 0, c = 0;
                for (int dy = -1; dy <= 1; dy++)
                    for (int dx = -1; dx <= 1; dx++)
                    {
                        int j = (y + dy) * w + x + dx;
                        a += ixx[j]; b += ixy[j]; c += iyy[j];
                    }
                // smaller eigenvalue of [[a,b],[b,c]]
                float r = (a + c) / 2 - MathF.Sqrt((a - c) * (a - c) / 4 + b * b);
                response[y * w + x] = r;
                if (r > max) max = r;
            }
        if (max <= 0) return [];
        float threshold = max * 0.04f;
        var candidates = new List<(float R, int X, int Y)>();
        for (int y = 2; y < h - 2; y++)
            for (int x = 2; x < w - 2; x++)
            {
                float r = response[y * w + x];
                if (r < threshold) continue;
                bool localMax = true;
                for (int dy = -1; dy <= 1 && localMax; dy++)
                    for (int dx = -1; dx <= 1; dx++)
                        if (response[(y + dy) * w + x + dx] > r) { localMax = false; break; }
                if (localMax) candidates.Add((r, x, y));
            }
        double minDist = 0.06 * Math.Min(w, h);
        double minDist2 = minDist * minDist;
        var chosen = new List<PointF>();
        foreach (var c in candidates.OrderByDescending(c => c.R).ThenBy(c => c.Y).ThenBy(c => c.X))
        {
            if (chosen.Any(p => (p.X - c.X) * (p.X - c.X) + (p.Y - c.Y) * (p.Y - c.Y) < minDist2)) continue;
            chosen.Add(new PointF(c.X, c.Y));
            if (chosen.Count == 100) break;
        }
        return chosen;
    }

    /// <summary>
    /// Slides a cropW×cropH window along the long free axis in 4-px steps (including the window flush with the far
    /// edge, which A1111 never scores) and returns the centre of the first highest-scoring window; null when the
    /// window already fills the region.
    /// </summary>
    internal static PointF? EntropyPoint(byte[] grey, int w, int h, int cropW, int cropH, EntropyMode mode)
    {
        cropW = Math.Clamp(cropW, 1, w); cropH = Math.Clamp(cropH, 1, h);
        bool horizontal = w - cropW >= h - cropH;
        int free = horizontal ? w - cropW : h - cropH;
        if (free <= 0) return null;
        double best = double.NegativeInfinity;
        int bestOffset = 0;
        var offsets = new List<int>();
        for (int o = 0; o < free; o += 4) offsets.Add(o);
        offsets.Add(free);
        foreach (int o in offsets)
        {
            int x0 = horizontal ? o : 0, y0 = horizontal ? 0 : o;
            double score = mode == EntropyMode.Shannon ? ShannonEntropy(grey, w, x0, y0, cropW, cropH) : A1111Entropy(grey, w, x0, y0, cropW, cropH);
            if (score > best) { best = score; bestOffset = o; }
        }
        return horizontal ? new PointF(bestOffset + cropW / 2f, cropH / 2f) : new PointF(cropW / 2f, bestOffset + cropH / 2f);
    }

    /// <summary>−Σ p·log2 p over the 256-bin histogram of a window.</summary>
    internal static double ShannonEntropy(byte[] grey, int stride, int x0, int y0, int cw, int ch)
    {
        Span<int> hist = stackalloc int[256];
        for (int y = y0; y < y0 + ch; y++)
            for (int x = x0; x < x0 + cw; x++) hist[grey[y * stride + x]]++;
        double n = (double)cw * ch, e = 0;
        foreach (int c in hist)
            if (c > 0) { double p = c / n; e -= p * Math.Log2(p); }
        return e;
    }

    /// <summary>A1111's score: Floyd–Steinberg dither of the window to 1 bit, then −Σ log2 p over the non-empty bins.</summary>
    internal static double A1111Entropy(byte[] grey, int stride, int x0, int y0, int cw, int ch)
    {
        var err = new float[cw * ch];
        for (int y = 0; y < ch; y++)
            for (int x = 0; x < cw; x++) err[y * cw + x] = grey[(y0 + y) * stride + x0 + x];
        long white = 0;
        for (int y = 0; y < ch; y++)
            for (int x = 0; x < cw; x++)
            {
                int i = y * cw + x;
                float v = err[i];
                float q = v >= 128 ? 255 : 0;
                if (q > 0) white++;
                float e = v - q;
                if (x + 1 < cw) err[i + 1] += e * 7 / 16;
                if (y + 1 < ch)
                {
                    if (x > 0) err[i + cw - 1] += e * 3 / 16;
                    err[i + cw] += e * 5 / 16;
                    if (x + 1 < cw) err[i + cw + 1] += e * 1 / 16;
                }
            }
        double n = (double)cw * ch, s = 0;
        foreach (long c in new[] { white, (long)n - white })
            if (c > 0) s -= Math.Log2(c / n);
        return s;
    }
}
