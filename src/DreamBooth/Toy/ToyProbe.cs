using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Toy;

/// <summary>What <see cref="ToyProbe"/> reads from one picture.</summary>
/// <param name="FigureFound">A figure-sized region differs from the best matching background.</param>
/// <param name="Background">The background the picture matches best.</param>
/// <param name="FigureBox">Bounding box of the figure (pixels), empty when none was found.</param>
/// <param name="TorsoPixels">Pixels of the figure's torso band that were classified.</param>
/// <param name="ShirtColor">The most frequent shirt colour of the torso (a <see cref="ToyWorld.ShirtColors"/> name), null without a figure.</param>
/// <param name="SubjectScore">Fraction of torso pixels whose nearest palette colour is the subject's signature purple, 0..1.</param>
/// <param name="SignatureFractionOfImage">Fraction of all pixels whose nearest palette colour is the signature purple (no figure detection needed).</param>
public sealed record ToyProbeResult(
    bool FigureFound, ToyBackground Background, Rectangle FigureBox, int TorsoPixels, string? ShirtColor,
    double SubjectScore, double SignatureFractionOfImage);

/// <summary>Figures over a set of pictures (e.g. 16 samples of one prompt).</summary>
/// <param name="MeanSubjectScore">Mean <see cref="ToyProbeResult.SubjectScore"/>.</param>
/// <param name="SubjectRate">Fraction of pictures whose shirt reads as the subject's signature colour (<see cref="ToyProbeResult.ShirtColor"/> = purple).</param>
/// <param name="ClassDiversity">Normalized Shannon entropy of the shirt colours (0 = all alike, 1 = all 9 colours equally often).</param>
public sealed record ToyProbeSummary(
    int Count, int FiguresFound, double MeanSubjectScore, double SubjectRate, double ClassDiversity, int DistinctShirtColors,
    IReadOnlyDictionary<string, int> ShirtColorCounts);

/// <summary>
/// Measures toy-world pictures with the renderer's own knowledge: finds the figure by difference from the
/// best-matching background, reads the shirt in the figure's torso band (between 25 % and 58 % of the figure's
/// height, within the torso's width), names its colour by the world's palette and scores how much of it has
/// the subject's signature purple.
/// </summary>
public static class ToyProbe
{
    /// <summary>Summed absolute RGB difference above which a pixel is not background.</summary>
    public const int ForegroundThreshold = 60;

    static readonly Dictionary<(ToyBackground, int, int), byte[]> BackgroundCache = new();

    public static ToyProbeResult Analyze(Image<Rgb24> image)
    {
        int w = image.Width, h = image.Height;
        var px = new byte[w * h * 3];
        image.CopyPixelDataTo(px);

        // 1. best matching background (median pixel difference: the figure covers far less than half the picture)
        ToyBackground best = ToyBackground.Studio;
        int[]? bestDiff = null;
        double bestMedian = double.MaxValue;
        foreach (var bg in Enum.GetValues<ToyBackground>())
        {
            var bgPx = BackgroundPixels(bg, w, h);
            var diff = new int[w * h];
            for (int i = 0; i < w * h; i++)
                diff[i] = Math.Abs(px[3 * i] - bgPx[3 * i]) + Math.Abs(px[3 * i + 1] - bgPx[3 * i + 1]) + Math.Abs(px[3 * i + 2] - bgPx[3 * i + 2]);
            var sorted = (int[])diff.Clone();
            Array.Sort(sorted);
            double median = sorted[sorted.Length / 2];
            if (median < bestMedian) { bestMedian = median; best = bg; bestDiff = diff; }
        }

        int signatureAll = 0;
        for (int i = 0; i < w * h; i++)
            if (IsSignature(px[3 * i], px[3 * i + 1], px[3 * i + 2])) signatureAll++;
        double sigImage = (double)signatureAll / (w * h);

        // 2. the figure = largest 4-connected foreground component
        var mask = new bool[w * h];
        for (int i = 0; i < w * h; i++) mask[i] = bestDiff![i] > ForegroundThreshold;
        var component = FigureComponents(mask, w, h);
        if (component.Count < Math.Max(12, w * h / 200))
            return new ToyProbeResult(false, best, Rectangle.Empty, 0, null, 0, sigImage);

        int minX = w, maxX = -1, minY = h, maxY = -1;
        foreach (int i in component)
        {
            int x = i % w, y = i / w;
            minX = Math.Min(minX, x); maxX = Math.Max(maxX, x); minY = Math.Min(minY, y); maxY = Math.Max(maxY, y);
        }
        int figH = maxY - minY + 1;

        // 3. torso band, restricted to the torso's width around the band's centre column
        int bandTop = minY + (int)Math.Round(figH * ToyWorld.FigureGeometry.TorsoTop);
        int bandBottom = minY + (int)Math.Round(figH * ToyWorld.FigureGeometry.TorsoBottom);
        var inComponent = new bool[w * h];
        foreach (int i in component) inComponent[i] = true;
        double sumX = 0; int nBand = 0;
        for (int y = bandTop; y < bandBottom; y++)
        for (int x = minX; x <= maxX; x++)
            if (inComponent[y * w + x]) { sumX += x; nBand++; }
        if (nBand == 0) return new ToyProbeResult(false, best, Rectangle.Empty, 0, null, 0, sigImage);
        double cx = sumX / nBand, halfWidth = Math.Max(1.0, 0.15 * figH);

        var counts = new Dictionary<string, int>();
        int torso = 0, signature = 0;
        for (int y = bandTop; y < bandBottom; y++)
        for (int x = minX; x <= maxX; x++)
        {
            int i = y * w + x;
            if (!inComponent[i] || Math.Abs(x + 0.5 - cx) > halfWidth) continue;
            byte r = px[3 * i], g = px[3 * i + 1], b = px[3 * i + 2];
            torso++;
            if (IsSignature(r, g, b)) signature++;
            var name = NearestShirtColor(r, g, b);
            counts[name] = counts.GetValueOrDefault(name) + 1;
        }
        if (torso == 0) return new ToyProbeResult(false, best, Rectangle.Empty, 0, null, 0, sigImage);
        var shirt = counts.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal).First().Key;
        return new ToyProbeResult(true, best, new Rectangle(minX, minY, maxX - minX + 1, figH), torso, shirt,
            (double)signature / torso, sigImage);
    }

    public static ToyProbeSummary Summarize(IReadOnlyList<ToyProbeResult> results)
    {
        if (results.Count == 0) throw new ArgumentException("no probe results to summarize", nameof(results));
        var found = results.Where(r => r.FigureFound).ToList();
        var counts = found.GroupBy(r => r.ShirtColor!).ToDictionary(g => g.Key, g => g.Count());
        double entropy = 0;
        foreach (var c in counts.Values)
        {
            double p = (double)c / found.Count;
            entropy -= p * Math.Log(p);
        }
        double diversity = found.Count == 0 ? 0 : entropy / Math.Log(ToyWorld.ShirtColors.Count);
        return new ToyProbeSummary(results.Count, found.Count, results.Average(r => r.SubjectScore),
            results.Count(r => r.ShirtColor == ToyWorld.SignatureColor) / (double)results.Count, diversity, counts.Count, counts);
    }

    public static ToyProbeSummary Measure(IEnumerable<Image<Rgb24>> images) => Summarize(images.Select(Analyze).ToList());

    /// <summary>
    /// A pixel of the subject's signature colour: its nearest colour in the world's shirt palette is purple. (A
    /// palette rule, not a hue window: the toy model draws purple a little washed out at 32×32, and a rule that
    /// only accepts the renderer's saturated purple would miss what the model actually learned.)
    /// </summary>
    public static bool IsSignature(byte r, byte g, byte b) => NearestShirtColor(r, g, b) == ToyWorld.SignatureColor;

    /// <summary>The nearest shirt colour of the world's palette (RGB distance).</summary>
    public static string NearestShirtColor(byte r, byte g, byte b)
    {
        string best = ToyWorld.ShirtColors[0];
        int bestD = int.MaxValue;
        foreach (var name in ToyWorld.ShirtColors)
        {
            var c = ToyWorld.Colors[name];
            int d = (r - c.R) * (r - c.R) + (g - c.G) * (g - c.G) + (b - c.B) * (b - c.B);
            if (d < bestD) { bestD = d; best = name; }
        }
        return best;
    }

    static byte[] BackgroundPixels(ToyBackground bg, int w, int h)
    {
        lock (BackgroundCache)
        {
            if (BackgroundCache.TryGetValue((bg, w, h), out var cached)) return cached;
            using var img = ToyWorld.RenderBackground(bg, w, h);
            var bytes = new byte[w * h * 3];
            img.CopyPixelDataTo(bytes);
            BackgroundCache[(bg, w, h)] = bytes;
            return bytes;
        }
    }

    /// <summary>
    /// The largest 4-connected foreground component plus every other component of at least 4 pixels whose centre
    /// column lies within its columns (a shirt the colour of the background can cut a figure in two).
    /// </summary>
    static List<int> FigureComponents(bool[] mask, int w, int h)
    {
        var seen = new bool[mask.Length];
        var comps = new List<List<int>>();
        var stack = new Stack<int>();
        for (int start = 0; start < mask.Length; start++)
        {
            if (!mask[start] || seen[start]) continue;
            var comp = new List<int>();
            stack.Push(start); seen[start] = true;
            while (stack.Count > 0)
            {
                int i = stack.Pop();
                comp.Add(i);
                int x = i % w, y = i / w;
                if (x > 0) Visit(i - 1);
                if (x < w - 1) Visit(i + 1);
                if (y > 0) Visit(i - w);
                if (y < h - 1) Visit(i + w);
            }
            comps.Add(comp);
        }
        if (comps.Count == 0) return [];
        var largest = comps.MaxBy(c => c.Count)!;
        int x0 = largest.Min(i => i % w) - 1, x1 = largest.Max(i => i % w) + 1;
        var result = new List<int>(largest);
        foreach (var c in comps)
        {
            if (ReferenceEquals(c, largest) || c.Count < 4) continue;
            double cx = c.Average(i => i % w);
            if (cx >= x0 && cx <= x1) result.AddRange(c);
        }
        return result;

        void Visit(int j)
        {
            if (mask[j] && !seen[j]) { seen[j] = true; stack.Push(j); }
        }
    }
}
