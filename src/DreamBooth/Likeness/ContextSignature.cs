using DreamBooth.Data;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace DreamBooth.Likeness;

/// <summary>
/// What an image shows around the face: a 16×16 thumbnail in CIELAB with the face and hair region masked out. Two
/// signatures compare by the mean colour difference ΔE (CIE76) over the cells unmasked in both. It measures
/// layout, clothes, background and light — the "context" DreamBooth over-fits to: a generated image whose
/// background, framing and clothes reproduce a training photo is close to it (ΔE ≈ 5–10), an unrelated scene is far
/// (ΔE ≈ 20–40). Aspect ratios are normalised (both are stretched to the grid), so it compares layout, not pixels.
/// </summary>
public sealed class ContextSignature
{
    public const int Grid = 16;
    /// <summary>Fewer comparable cells than this fraction (big faces in both) → no distance.</summary>
    public const double MinCoverage = 0.2;

    readonly float[] _lab;   // Grid×Grid×3
    readonly bool[] _masked; // Grid×Grid

    ContextSignature(float[] lab, bool[] masked)
    {
        _lab = lab;
        _masked = masked;
    }

    /// <summary>Share of the grid masked out as face/hair.</summary>
    public double MaskedFraction => _masked.Count(m => m) / (double)_masked.Length;

    /// <summary>
    /// The signature of <paramref name="image"/> with every face in <paramref name="faces"/> masked: the box grown to
    /// 1.6× its width and from half a box above (hair) to a third below (chin, neck).
    /// </summary>
    public static ContextSignature From(Image<Rgb24> image, IReadOnlyList<FaceBox> faces)
    {
        using var small = image.Clone(c => c.Resize(new ResizeOptions { Size = new Size(Grid, Grid), Mode = ResizeMode.Stretch, Sampler = KnownResamplers.Box }));
        var lab = new float[Grid * Grid * 3];
        small.ProcessPixelRows(acc =>
        {
            for (int y = 0; y < Grid; y++)
            {
                var row = acc.GetRowSpan(y);
                for (int x = 0; x < Grid; x++)
                {
                    var (l, a, b) = ToLab(row[x]);
                    int o = (y * Grid + x) * 3;
                    lab[o] = l; lab[o + 1] = a; lab[o + 2] = b;
                }
            }
        });
        var masked = new bool[Grid * Grid];
        foreach (var f in faces)
        {
            double x0 = f.CenterX - 0.8 * f.Width, x1 = f.CenterX + 0.8 * f.Width;
            double y0 = f.Y - 0.5 * f.Height, y1 = f.Y + f.Height * 1.33;
            for (int gy = 0; gy < Grid; gy++)
                for (int gx = 0; gx < Grid; gx++)
                {
                    double cx = (gx + 0.5) * image.Width / Grid, cy = (gy + 0.5) * image.Height / Grid;
                    if (cx >= x0 && cx <= x1 && cy >= y0 && cy <= y1) masked[gy * Grid + gx] = true;
                }
        }
        return new ContextSignature(lab, masked);
    }

    /// <summary>Mean ΔE over the cells unmasked in both, or null when fewer than <see cref="MinCoverage"/> of them are.</summary>
    public double? Distance(ContextSignature other)
    {
        double sum = 0;
        int n = 0;
        for (int i = 0; i < _masked.Length; i++)
        {
            if (_masked[i] || other._masked[i]) continue;
            int o = i * 3;
            double dl = _lab[o] - other._lab[o], da = _lab[o + 1] - other._lab[o + 1], db = _lab[o + 2] - other._lab[o + 2];
            sum += Math.Sqrt(dl * dl + da * da + db * db);
            n++;
        }
        return n < MinCoverage * _masked.Length ? null : sum / n;
    }

    /// <summary>sRGB (D65) → CIELAB.</summary>
    internal static (float L, float A, float B) ToLab(Rgb24 c)
    {
        static double Lin(byte v)
        {
            double s = v / 255.0;
            return s <= 0.04045 ? s / 12.92 : Math.Pow((s + 0.055) / 1.055, 2.4);
        }
        double r = Lin(c.R), g = Lin(c.G), b = Lin(c.B);
        double x = (0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / 0.95047;
        double y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b;
        double z = (0.0193339 * r + 0.1191920 * g + 0.9503041 * b) / 1.08883;
        static double F(double t) => t > 216.0 / 24389 ? Math.Cbrt(t) : (24389.0 / 27 * t + 16) / 116;
        double fx = F(x), fy = F(y), fz = F(z);
        return ((float)(116 * fy - 16), (float)(500 * (fx - fy)), (float)(200 * (fy - fz)));
    }
}
