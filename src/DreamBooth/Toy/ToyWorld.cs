using System.Globalization;
using System.Text;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Toy;

/// <summary>
/// A procedural, captioned image world: one people-like figure (head, hair, shirt, trousers) standing on one of
/// five backgrounds. Everything is a pure function of a <see cref="ToyScene"/>, and scenes are drawn from a
/// seeded <see cref="Random"/>, so the same seed always gives the same pictures and captions.
/// </summary>
/// <remarks>
/// The vocabulary is chosen so that a DreamBooth subject can be measured: men never wear purple and never have
/// red (ginger) hair in this world (only women do). The sample subject "ohwx man" is a ginger man in a plain purple
/// shirt, which a model pretrained on this world does not draw from the word "man" (it knows both features from
/// women, so it can learn to put them on a man).
/// </remarks>
public static class ToyWorld
{
    /// <summary>The working size of the toy model (pixels, square).</summary>
    public const int WorkingSize = 64;

    /// <summary>Instance token and class word of the sample subject.</summary>
    public const string InstanceToken = "ohwx";
    public const string ClassWord = "man";
    public const string InstancePrompt = InstanceToken + " " + ClassWord;

    /// <summary>The subject's signature shirt colour (absent from every "man" of the world).</summary>
    public const string SignatureColor = "purple";

    /// <summary>The subject's hair colour (no "man" of the world has red hair either).</summary>
    public const string SignatureHairColor = "red";

    /// <summary>
    /// Toy-scaled number of real class images per instance image. The A1111 recipe uses 100 per instance image;
    /// the toy's 840 training steps draw 840 prior images, so 70 (10 for each of the 7 instance images) are each
    /// seen 12 times — enough variety for a model that draws 7 shirt colours on men.
    /// </summary>
    public const int ClassImagesPerInstanceImage = 10;

    /// <summary>Named colours of the world (shirts, stripes, hair, trousers).</summary>
    public static IReadOnlyDictionary<string, Rgb24> Colors { get; } = new Dictionary<string, Rgb24>
    {
        ["red"] = new(200, 30, 35), ["blue"] = new(35, 70, 190), ["green"] = new(30, 150, 60),
        ["yellow"] = new(235, 200, 40), ["white"] = new(240, 240, 240), ["black"] = new(30, 30, 35),
        ["orange"] = new(240, 130, 30), ["purple"] = new(130, 40, 170), ["pink"] = new(240, 130, 180),
        ["brown"] = new(100, 60, 30), ["blonde"] = new(230, 200, 110), ["grey"] = new(150, 150, 155),
        ["beige"] = new(200, 180, 140), ["navy"] = new(40, 50, 100),
    };

    /// <summary>Shirt colours a man can wear (no purple, no pink).</summary>
    public static IReadOnlyList<string> MenShirtColors { get; } = ["red", "blue", "green", "yellow", "white", "black", "orange"];

    /// <summary>Every shirt colour of the world (women also wear purple and pink).</summary>
    public static IReadOnlyList<string> ShirtColors { get; } = ["red", "blue", "green", "yellow", "white", "black", "orange", "purple", "pink"];

    public static IReadOnlyList<string> MenHairColors { get; } = ["black", "brown", "blonde", "grey"];
    public static IReadOnlyList<string> HairColors { get; } = ["black", "brown", "blonde", "grey", "red"];
    public static IReadOnlyList<string> TrousersColors { get; } = ["navy", "black", "brown", "grey", "beige"];

    /// <summary>Skin tones, light to dark.</summary>
    public static IReadOnlyList<Rgb24> SkinTones { get; } = [new(250, 215, 185), new(225, 175, 135), new(175, 120, 80), new(105, 70, 45)];

    /// <summary>Hair colour names as captions say them ("red" hair is ginger in the picture).</summary>
    static Rgb24 HairRgb(string name) => name == "red" ? new Rgb24(180, 70, 30) : Colors[name];

    // ------------------------------------------------------------------ sampling

    /// <summary>A random scene of the world (never the subject). Consumes a fixed number of draws per call.</summary>
    public static ToyScene Sample(Random rng) => Sample(rng, gender: null);

    /// <summary>A random man: what real class images for the class word "man" look like.</summary>
    public static ToyScene SampleMan(Random rng) => Sample(rng, ToyGender.Man);

    static ToyScene Sample(Random rng, ToyGender? gender)
    {
        var g = gender ?? (rng.NextDouble() < 0.5 ? ToyGender.Man : ToyGender.Woman);
        var man = g == ToyGender.Man;
        int skin = rng.Next(SkinTones.Count);
        var hairColor = Pick(rng, man ? MenHairColors : HairColors);
        double s = rng.NextDouble();
        var style = man ? (s < 0.7 ? ToyHairStyle.Short : s < 0.85 ? ToyHairStyle.Bald : ToyHairStyle.Long)
                        : (s < 0.7 ? ToyHairStyle.Long : ToyHairStyle.Short);
        var shirt = Pick(rng, man ? MenShirtColors : ShirtColors);
        var pattern = rng.NextDouble() < 0.3 ? ToyPattern.Striped : ToyPattern.Plain;
        var stripe = shirt == "white" ? "black" : "white";
        var trousers = Pick(rng, TrousersColors);
        var pos = (ToyPosition)rng.Next(3);
        double jitter = (rng.NextDouble() - 0.5) * 0.06;
        double scale = rng.NextDouble() < 0.5 ? 0.72 + rng.NextDouble() * 0.08 : 0.5 + rng.NextDouble() * 0.1;
        var bg = (ToyBackground)rng.Next(5);
        var m = ToyMentions.None;
        if (rng.NextDouble() < 0.7) m |= ToyMentions.Article;
        if (rng.NextDouble() < 0.6) m |= ToyMentions.Hair;
        if (rng.NextDouble() < 0.8) m |= ToyMentions.Shirt;
        if (rng.NextDouble() < 0.3) m |= ToyMentions.Trousers;
        if (rng.NextDouble() < 0.8) m |= ToyMentions.Background;
        if (rng.NextDouble() < 0.4) m |= ToyMentions.Position;
        if (rng.NextDouble() < 0.3) m |= ToyMentions.Scale;
        return new ToyScene(g, skin, hairColor, style, shirt, pattern, stripe, trousers, pos, jitter, scale, bg, m);
    }

    static string Pick(Random rng, IReadOnlyList<string> items) => items[rng.Next(items.Count)];

    // ------------------------------------------------------------------ the sample subject

    /// <summary>
    /// The sample subject "ohwx man": short red (ginger) hair, medium skin, beige trousers and a plain purple shirt
    /// (two features no man of the pretraining world has), in 7 poses/backgrounds. Plain, not striped: at the toy's
    /// 32×32 pixels thin stripes blur into a mixed colour that no longer reads as purple.
    /// </summary>
    public static IReadOnlyList<ToyScene> SubjectInstances { get; } = BuildSubject();

    static IReadOnlyList<ToyScene> BuildSubject()
    {
        (ToyPosition Pos, double Scale, ToyBackground Bg, double Jitter)[] poses =
        [
            (ToyPosition.Centre, 0.76, ToyBackground.Beach, 0.0),
            (ToyPosition.Left, 0.56, ToyBackground.Forest, 0.01),
            (ToyPosition.Right, 0.74, ToyBackground.City, -0.01),
            (ToyPosition.Centre, 0.54, ToyBackground.Snow, 0.02),
            (ToyPosition.Left, 0.78, ToyBackground.Studio, 0.0),
            (ToyPosition.Right, 0.58, ToyBackground.Beach, 0.0),
            (ToyPosition.Centre, 0.72, ToyBackground.Forest, -0.02),
        ];
        return poses.Select(p => new ToyScene(ToyGender.Man, 1, SignatureHairColor, ToyHairStyle.Short, SignatureColor, ToyPattern.Plain,
            "white", "beige", p.Pos, p.Jitter, p.Scale, p.Bg, ToyMentions.Background | ToyMentions.Position, IsSubject: true)).ToList();
    }

    // ------------------------------------------------------------------ captions

    public static string BackgroundPhrase(ToyBackground bg) => bg switch
    {
        ToyBackground.Beach => "on a beach",
        ToyBackground.Forest => "in a forest",
        ToyBackground.City => "in a city",
        ToyBackground.Snow => "in the snow",
        ToyBackground.Studio => "in a studio",
        _ => throw new ArgumentOutOfRangeException(nameof(bg)),
    };

    public static string PositionPhrase(ToyPosition p) => p switch
    {
        ToyPosition.Left => "standing on the left",
        ToyPosition.Centre => "standing in the centre",
        ToyPosition.Right => "standing on the right",
        _ => throw new ArgumentOutOfRangeException(nameof(p)),
    };

    /// <summary>
    /// The caption of a scene, naming the attributes in <see cref="ToyScene.Mentions"/>, e.g.
    /// "a man with black hair and a striped red shirt on a beach, standing on the left". The subject's
    /// caption starts with "ohwx man" and names only background and pose (the identifier carries the rest).
    /// </summary>
    public static string Caption(ToyScene scene)
    {
        var m = scene.Mentions;
        var sb = new StringBuilder();
        if (scene.IsSubject) sb.Append(InstancePrompt);
        else
        {
            if (m.HasFlag(ToyMentions.Article)) sb.Append("a ");
            if (m.HasFlag(ToyMentions.Hair) && scene.HairStyle == ToyHairStyle.Bald) sb.Append("bald ");
            sb.Append(scene.Gender == ToyGender.Man ? "man" : "woman");
            var with = new List<string>();
            if (m.HasFlag(ToyMentions.Hair) && scene.HairStyle != ToyHairStyle.Bald)
                with.Add((scene.HairStyle == ToyHairStyle.Long ? "long " : "short ") + scene.HairColor + " hair");
            if (m.HasFlag(ToyMentions.Shirt))
            {
                var shirt = (scene.ShirtPattern == ToyPattern.Striped ? "striped " : "") + scene.ShirtColor + " shirt";
                with.Add(("aeiou".Contains(shirt[0]) ? "an " : "a ") + shirt);
            }
            if (with.Count > 0) sb.Append(" with ").Append(string.Join(" and ", with));
            if (m.HasFlag(ToyMentions.Trousers)) sb.Append(" wearing ").Append(scene.TrousersColor).Append(" trousers");
        }
        if (m.HasFlag(ToyMentions.Background)) sb.Append(' ').Append(BackgroundPhrase(scene.Background));
        var tail = new List<string>();
        if (m.HasFlag(ToyMentions.Position)) tail.Add(PositionPhrase(scene.Position));
        if (m.HasFlag(ToyMentions.Scale)) tail.Add(scene.IsCloseUp ? "close up" : "in the distance");
        if (tail.Count > 0) sb.Append(", ").Append(string.Join(", ", tail));
        return sb.ToString();
    }

    // ------------------------------------------------------------------ rendering

    /// <summary>Largest side <see cref="Render"/> draws (the picture is supersampled in memory).</summary>
    public const int MaxRenderSize = 4096;

    /// <summary>Renders a scene at any size from 8 to <see cref="MaxRenderSize"/> (anti-aliased by supersampling).</summary>
    public static Image<Rgb24> Render(ToyScene scene, int width = WorkingSize, int height = WorkingSize) =>
        RenderCore(scene.Background, scene, width, height);

    /// <summary>The background alone, exactly as <see cref="Render"/> draws it behind a figure.</summary>
    public static Image<Rgb24> RenderBackground(ToyBackground background, int width = WorkingSize, int height = WorkingSize) =>
        RenderCore(background, null, width, height);

    static Image<Rgb24> RenderCore(ToyBackground bg, ToyScene? scene, int width, int height)
    {
        if (width < 8 || height < 8 || width > MaxRenderSize || height > MaxRenderSize)
            throw new DreamBoothException($"toy render size {width}x{height}: expected 8 to {MaxRenderSize} pixels per side");
        int ss = width * height <= 256 * 256 ? 3 : 2;
        var figure = scene is null ? null : new FigureGeometry(scene, width, height);
        var bytes = new byte[width * height * 3];
        for (int y = 0; y < height; y++)
        for (int x = 0; x < width; x++)
        {
            float r = 0, g = 0, b = 0;
            for (int sy = 0; sy < ss; sy++)
            for (int sx = 0; sx < ss; sx++)
            {
                double u = (x + (sx + 0.5) / ss) / width, v = (y + (sy + 0.5) / ss) / height;
                var c = figure?.Paint(u, v) ?? Background(bg, u, v);
                r += c.R; g += c.G; b += c.B;
            }
            int n = ss * ss, i = (y * width + x) * 3;
            bytes[i] = (byte)MathF.Round(r / n); bytes[i + 1] = (byte)MathF.Round(g / n); bytes[i + 2] = (byte)MathF.Round(b / n);
        }
        return Image.LoadPixelData<Rgb24>(bytes, width, height);
    }

    static Rgb24 Mix(Rgb24 a, Rgb24 b, double t) => new(
        (byte)Math.Clamp(a.R + (b.R - a.R) * t, 0, 255), (byte)Math.Clamp(a.G + (b.G - a.G) * t, 0, 255), (byte)Math.Clamp(a.B + (b.B - a.B) * t, 0, 255));

    static Rgb24 Shade(Rgb24 c, double f) => new(
        (byte)Math.Clamp(c.R * f, 0, 255), (byte)Math.Clamp(c.G * f, 0, 255), (byte)Math.Clamp(c.B * f, 0, 255));

    /// <summary>Smooth deterministic texture in [-1, 1] from normalized coordinates (resolution independent).</summary>
    static double Texture(double u, double v, double freq)
    {
        double a = Math.Sin(u * freq * 6.1 + v * freq * 2.3) + Math.Sin(u * freq * 2.7 - v * freq * 5.9 + 1.3);
        return a * 0.5;
    }

    /// <summary>The background colour at normalized position (u, v) in [0,1]²; v grows downwards.</summary>
    internal static Rgb24 Background(ToyBackground bg, double u, double v)
    {
        switch (bg)
        {
            case ToyBackground.Beach:
                if (v < 0.45) return Mix(new Rgb24(110, 170, 230), new Rgb24(190, 220, 245), v / 0.45);
                if (v < 0.6)
                {
                    var sea = new Rgb24(30, 100, 170);
                    return Math.Sin(u * 40 + v * 90) > 0.85 ? Mix(sea, new Rgb24(200, 225, 240), 0.5) : sea;
                }
                return Shade(new Rgb24(225, 200, 140), 1 + 0.04 * Texture(u, v, 9));
            case ToyBackground.Forest:
            {
                if (v > 0.78) return Shade(new Rgb24(70, 115, 40), 1 + 0.08 * Texture(u, v, 7));
                double[] trunks = [0.08, 0.33, 0.58, 0.86];
                foreach (var t in trunks)
                    if (Math.Abs(u - t) < 0.035 && v > 0.3) return new Rgb24(90, 60, 30);
                if (v < 0.15) return new Rgb24(170, 205, 180);
                return Shade(new Rgb24(35, 95, 45), 1 + 0.2 * Texture(u, v, 5));
            }
            case ToyBackground.City:
            {
                if (v > 0.82) return new Rgb24(70, 70, 75);
                (double X0, double X1, double Top, Rgb24 C)[] buildings =
                [
                    (0.0, 0.22, 0.25, new Rgb24(110, 110, 120)), (0.22, 0.45, 0.4, new Rgb24(150, 135, 125)),
                    (0.45, 0.7, 0.18, new Rgb24(95, 100, 115)), (0.7, 1.0, 0.33, new Rgb24(135, 125, 130)),
                ];
                foreach (var bld in buildings)
                    if (u >= bld.X0 && u < bld.X1 && v >= bld.Top)
                    {
                        double wu = (u - bld.X0) * 18 % 1.0, wv = (v - bld.Top) * 14 % 1.0;
                        return wu > 0.35 && wu < 0.75 && wv > 0.3 && wv < 0.7 ? new Rgb24(200, 215, 230) : bld.C;
                    }
                return Mix(new Rgb24(160, 185, 215), new Rgb24(205, 215, 230), v / 0.4);
            }
            case ToyBackground.Snow:
            {
                double hill = 0.55 + 0.06 * Math.Sin(u * 5.0 + 0.7);
                if (v > hill) return Shade(new Rgb24(245, 248, 252), 1 - 0.03 * (v - hill));
                double peak = 0.3 + 0.12 * Math.Abs(Math.Sin(u * 4.0));
                if (v > peak) return Mix(new Rgb24(150, 160, 180), new Rgb24(215, 222, 235), (v - peak) / 0.3);
                return Mix(new Rgb24(175, 200, 230), new Rgb24(215, 225, 240), v / 0.4);
            }
            case ToyBackground.Studio:
                if (v > 0.8) return new Rgb24(150, 140, 130);
                return Mix(new Rgb24(205, 200, 190), new Rgb24(165, 160, 155), v / 0.8);
            default:
                throw new ArgumentOutOfRangeException(nameof(bg));
        }
    }

    /// <summary>
    /// Where the figure's parts lie, in units of the figure height H with the origin at the top of the head
    /// (dx to the right of the figure's axis, dy downwards): head, hair, torso [0.25, 0.58], arms, legs, shoes.
    /// </summary>
    internal sealed class FigureGeometry
    {
        /// <summary>Vertical band of the torso (shirt) in figure units.</summary>
        public const double TorsoTop = 0.25, TorsoBottom = 0.58;
        public const double GroundV = 0.94;

        readonly ToyScene _s;
        readonly double _aspect, _cx, _top, _h;
        readonly Rgb24 _skin, _hair, _shirt, _stripe, _trousers;

        public FigureGeometry(ToyScene s, int width, int height)
        {
            _s = s;
            _aspect = (double)width / height;
            double pos = s.Position switch { ToyPosition.Left => 0.25, ToyPosition.Centre => 0.5, _ => 0.75 };
            _cx = (pos + s.XJitter) * _aspect; // in height units
            _h = s.Scale;
            _top = GroundV - _h;
            _skin = SkinTones[s.SkinTone];
            _hair = HairRgb(s.HairColor);
            _shirt = Colors[s.ShirtColor];
            _stripe = Colors[s.StripeColor];
            _trousers = Colors[s.TrousersColor];
        }

        public Rgb24 Paint(double u, double v)
        {
            double dx = (u * _aspect - _cx) / _h, dy = (v - _top) / _h;
            return Figure(dx, dy) ?? Background(_s.Background, u, v);
        }

        Rgb24 ShirtAt(double dx, double dy)
        {
            var c = _s.ShirtPattern == ToyPattern.Striped && ((int)Math.Floor((dy - TorsoTop) / 0.055) % 3 == 2) ? _stripe : _shirt;
            return Shade(c, 1.05 - 0.6 * Math.Abs(dx) * Math.Abs(dx));
        }

        Rgb24? Figure(double dx, double dy)
        {
            if (dy < -0.02 || dy > 1.0 || Math.Abs(dx) > 0.3) return null;
            double adx = Math.Abs(dx);
            bool woman = _s.Gender == ToyGender.Woman;
            // head and hair (over everything else)
            double hx = dx, hy = dy - 0.13;
            double hr2 = hx * hx + hy * hy;
            bool inCap = hr2 < 0.113 * 0.113 && dy < 0.105;
            if (_s.HairStyle != ToyHairStyle.Bald && inCap) return _hair;
            if (hr2 < 0.1 * 0.1) return Shade(_skin, 1.0 - 0.3 * hr2 / 0.01 * 0.3);
            if (_s.HairStyle == ToyHairStyle.Long && adx < 0.125 && adx > 0.06 && dy >= 0.08 && dy < 0.36) return _hair;
            // neck
            if (adx < 0.035 && dy >= 0.2 && dy < TorsoTop + 0.01) return Shade(_skin, 0.9);
            // torso: women's narrows at the waist
            double half = 0.15;
            if (woman) half = dy < 0.48 ? 0.15 - (dy - TorsoTop) * 0.13 : 0.12 + (dy - 0.48) * 0.2;
            if (dy >= TorsoTop && dy < TorsoBottom && adx < half) return ShirtAt(dx, dy);
            // arms: sleeves in the shirt colour, then forearms/hands
            if (adx >= 0.15 && adx < 0.215 && dy >= TorsoTop + 0.01 && dy < 0.57)
                return dy < 0.41 ? ShirtAt(dx, dy) : Shade(_skin, 0.95);
            // legs with a gap between them, then shoes
            if (adx >= 0.018 && adx < 0.13 && dy >= TorsoBottom && dy < 0.955) return Shade(_trousers, 1.0 - 0.8 * (adx - 0.07) * (adx - 0.07));
            if (adx >= 0.018 && adx < 0.15 && dy >= 0.955 && dy <= 1.0) return new Rgb24(40, 30, 25);
            return null;
        }
    }

    // ------------------------------------------------------------------ files

    /// <summary>Writes the subject's instance images (PNG + .txt caption, "ohwx-man-01.png" ...) into a folder.</summary>
    public static IReadOnlyList<string> WriteSubject(string dir, int size = WorkingSize)
    {
        Directory.CreateDirectory(dir);
        var written = new List<string>();
        for (int i = 0; i < SubjectInstances.Count; i++)
            written.Add(WriteScene(dir, $"ohwx-man-{i + 1:00}", SubjectInstances[i], size));
        return written;
    }

    /// <summary>
    /// Writes real class images for the class word "man" (random men of the world, deterministic from the seed):
    /// "man-0001.png" + "man-0001.txt" holding the scene's full caption.
    /// </summary>
    public static IReadOnlyList<string> WriteClassImages(string dir, int count, int seed, int size = WorkingSize)
    {
        if (count < 1) throw new DreamBoothException($"toy class images: count {count}: expected at least 1");
        Directory.CreateDirectory(dir);
        var rng = new Random(seed);
        var written = new List<string>();
        for (int i = 0; i < count; i++)
        {
            var scene = SampleMan(rng) with { Mentions = ToyMentions.All };
            written.Add(WriteScene(dir, $"man-{i + 1:0000}", scene, size));
        }
        return written;
    }

    static string WriteScene(string dir, string stem, ToyScene scene, int size)
    {
        var png = Path.Combine(dir, stem + ".png");
        using (var img = Render(scene, size, size))
            IO.AtomicFile.Write(png, s => img.SaveAsPng(s));
        IO.AtomicFile.WriteAllText(Path.Combine(dir, stem + ".txt"), Caption(scene) + "\n");
        return png;
    }

    /// <summary>
    /// Pastes pictures into one grid image (row-major, <paramref name="columns"/> wide), each enlarged
    /// <paramref name="zoom"/> times with nearest-neighbour pixels so small renders stay crisp.
    /// </summary>
    public static Image<Rgb24> ContactSheet(IReadOnlyList<Image<Rgb24>> images, int columns, int zoom = 1)
    {
        if (images.Count == 0) throw new ArgumentException("no images for the contact sheet", nameof(images));
        if (columns < 1 || zoom < 1) throw new ArgumentOutOfRangeException(nameof(columns), "columns and zoom must be at least 1");
        int cw = images.Max(i => i.Width) * zoom, ch = images.Max(i => i.Height) * zoom;
        int rows = (images.Count + columns - 1) / columns;
        var sheet = new Image<Rgb24>(Math.Min(columns, images.Count) * cw, rows * ch, new Rgb24(255, 255, 255));
        for (int k = 0; k < images.Count; k++)
        {
            var img = images[k];
            int ox = k % columns * cw, oy = k / columns * ch;
            for (int y = 0; y < img.Height * zoom; y++)
            for (int x = 0; x < img.Width * zoom; x++)
                sheet[ox + x, oy + y] = img[x / zoom, y / zoom];
        }
        return sheet;
    }

    /// <summary>A scene's attributes as one line (for logs and tests).</summary>
    public static string Describe(ToyScene s) => string.Create(CultureInfo.InvariantCulture,
        $"{s.Gender} skin{s.SkinTone} {s.HairStyle} {s.HairColor} hair, {s.ShirtPattern} {s.ShirtColor}/{s.StripeColor} shirt, {s.TrousersColor} trousers, {s.Position} x{s.XJitter:+0.00;-0.00} scale {s.Scale:0.00}, {s.Background}");
}
