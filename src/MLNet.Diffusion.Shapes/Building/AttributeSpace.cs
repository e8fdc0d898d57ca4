namespace MLNet.Diffusion.Shapes.Building;

/// <summary>
/// The text encoder's hidden dimensions: one per attribute value, in category blocks, then zero padding.
/// <code>
///  0 … 2   shapes       circle, square, triangle
///  3 … 8   shape colour red, green, blue, yellow, purple, orange
///  9 … 13  background   white, black, gray, blue, green
/// 14 … 16  position     left, center, right
/// 17 … 31  always 0     (room, and a width like a real CLIP's "hidden_size")
/// </code>
/// </summary>
internal static class AttributeSpace
{
    /// <summary>Hidden size D of the text encoder and the UNet's <c>encoder_hidden_states</c>.</summary>
    public const int Dimensions = 32;

    public const int ShapeOffset = 0;
    public const int ColorOffset = 3;
    public const int BackgroundOffset = 9;
    public const int PositionOffset = 14;

    /// <summary>Number of dimensions that carry meaning (17).</summary>
    public const int Used = 17;

    public static int Dim(ShapeKind v) => ShapeOffset + (int)v;

    public static int Dim(ShapeColor v) => ColorOffset + (int)v;

    public static int Dim(BackgroundColor v) => BackgroundOffset + (int)v;

    public static int Dim(ShapePosition v) => PositionOffset + (int)v;

    /// <summary>
    /// attr_k: +1 on the item's value in each category and −1 on the category's other values, so that
    /// λ·a·attr_k rewards a mentioned attribute that matches, penalises one that does not, and is 0 for a category the
    /// prompt does not mention (and for the empty prompt: classifier-free guidance sees a truly unconditional model).
    /// </summary>
    public static float[] ItemAttributes(ShapesItem item)
    {
        var a = new float[Dimensions];
        Block(a, ShapeOffset, 3, (int)item.Shape);
        Block(a, ColorOffset, 6, (int)item.Color);
        Block(a, BackgroundOffset, 5, (int)item.Background);
        Block(a, PositionOffset, 3, (int)item.Position);
        return a;
    }

    private static void Block(float[] a, int offset, int count, int value)
    {
        for (int i = 0; i < count; i++)
            a[offset + i] = i == value ? 1f : -1f;
    }
}
