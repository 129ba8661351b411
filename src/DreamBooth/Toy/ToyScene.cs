namespace DreamBooth.Toy;

public enum ToyGender { Man, Woman }

public enum ToyHairStyle { Short, Long, Bald }

public enum ToyPattern { Plain, Striped }

public enum ToyPosition { Left, Centre, Right }

public enum ToyBackground { Beach, Forest, City, Snow, Studio }

/// <summary>Which attributes the caption of a scene names (the picture always shows all of them).</summary>
[Flags]
public enum ToyMentions
{
    None = 0,
    Article = 1,
    Hair = 2,
    Shirt = 4,
    Trousers = 8,
    Background = 16,
    Position = 32,
    Scale = 64,
    All = Article | Hair | Shirt | Trousers | Background | Position | Scale,
}

/// <summary>
/// One picture of the toy world: a single people-like figure on a background. Colour fields are names from
/// <see cref="ToyWorld.Colors"/>. <see cref="XJitter"/> (fraction of the width) and <see cref="Scale"/>
/// (figure height as a fraction of the image height) are the continuous parts of the pose.
/// </summary>
public sealed record ToyScene(
    ToyGender Gender,
    int SkinTone,
    string HairColor,
    ToyHairStyle HairStyle,
    string ShirtColor,
    ToyPattern ShirtPattern,
    string StripeColor,
    string TrousersColor,
    ToyPosition Position,
    double XJitter,
    double Scale,
    ToyBackground Background,
    ToyMentions Mentions,
    bool IsSubject = false)
{
    /// <summary>Large figures (close up) are at least this tall; smaller ones are "in the distance".</summary>
    public const double CloseUpScale = 0.68;

    public bool IsCloseUp => Scale >= CloseUpScale;
}
