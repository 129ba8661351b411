namespace DreamBooth.Data;

/// <summary>A training resolution (multiple of the step).</summary>
public readonly record struct Bucket(int Width, int Height)
{
    public double Aspect => (double)Width / Height;
    public override string ToString() => $"{Width}x{Height}";

    /// <summary>Smallest and largest side <see cref="Parse"/> accepts (a prepared image is decoded whole in memory).</summary>
    public const int MinParsedSide = 8, MaxParsedSide = 8192;

    public static Bucket Parse(string s, string what = "size")
    {
        var parts = s.Trim().ToLowerInvariant().Split('x');
        if (parts.Length != 2 || !int.TryParse(parts[0], out int w) || !int.TryParse(parts[1], out int h) || w <= 0 || h <= 0)
            throw new DreamBoothException($"{what} '{s}': expected WIDTHxHEIGHT with positive integers, e.g. 768x1024");
        if (w < MinParsedSide || h < MinParsedSide || w > MaxParsedSide || h > MaxParsedSide)
            throw new DreamBoothException($"{what} '{s}': width and height must be {MinParsedSide} to {MaxParsedSide} pixels");
        return new Bucket(w, h);
    }
}

/// <summary>
/// Kohya-style aspect-ratio buckets: every width from the minimum side up to the maximum resolution in steps, with the
/// tallest height (a multiple of the step, at most the maximum resolution) that keeps the area within the maximum,
/// both orientations, plus the square bucket. An image goes to the bucket with the nearest aspect ratio (log distance).
/// </summary>
public sealed class AspectBuckets
{
    public IReadOnlyList<Bucket> Buckets { get; }
    public int MaxArea { get; }

    public AspectBuckets(IEnumerable<Bucket> buckets, int maxArea)
    {
        Buckets = buckets.Distinct().OrderBy(b => b.Width).ThenBy(b => b.Height).ToList();
        if (Buckets.Count == 0) throw new DreamBoothException("aspect buckets: no bucket fits the settings");
        MaxArea = maxArea;
    }

    /// <summary>Buckets whose area is at most maxArea.Width·maxArea.Height (e.g. 768×1024), sides in [minSide, maxResolution] stepping by step.</summary>
    public static AspectBuckets Generate(Bucket maxArea, int maxResolution = 1024, int step = 64, int minSide = 256)
    {
        if (step <= 0 || minSide <= 0 || maxResolution < minSide)
            throw new DreamBoothException($"aspect buckets: need step > 0 and 0 < min side ({minSide}) <= max resolution ({maxResolution})");
        int area = maxArea.Width * maxArea.Height;
        var set = new HashSet<Bucket>();
        int square = Math.Min(maxResolution, (int)(Math.Sqrt(area) / step) * step);
        if (square >= minSide) set.Add(new Bucket(square, square));
        for (int w = minSide; w <= maxResolution; w += step)
        {
            int h = Math.Min(maxResolution, area / w / step * step);
            if (h < minSide) continue;
            set.Add(new Bucket(w, h));
            set.Add(new Bucket(h, w));
        }
        return new AspectBuckets(set, area);
    }

    /// <summary>The bucket whose aspect ratio is closest to width/height (ties: the larger area).</summary>
    public Bucket Nearest(int width, int height)
    {
        double ar = Math.Log((double)width / height);
        return Buckets.OrderBy(b => Math.Round(Math.Abs(Math.Log(b.Aspect) - ar), 9)).ThenByDescending(b => b.Width * b.Height).First();
    }
}
