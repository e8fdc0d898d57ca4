using System;
using System.Collections.Generic;
using System.Globalization;

namespace MLNet.Diffusion.Shapes;

/// <summary>The shape drawn in a <see cref="ShapesDataset"/> item.</summary>
public enum ShapeKind
{
    /// <summary>A disc ("circle").</summary>
    Circle,

    /// <summary>An axis-aligned square.</summary>
    Square,

    /// <summary>An isosceles triangle pointing up.</summary>
    Triangle,
}

/// <summary>The colour of the shape in a <see cref="ShapesDataset"/> item.</summary>
public enum ShapeColor
{
    /// <summary>Red.</summary>
    Red,

    /// <summary>Green (brighter than the green background).</summary>
    Green,

    /// <summary>Blue (brighter than the blue background).</summary>
    Blue,

    /// <summary>Yellow.</summary>
    Yellow,

    /// <summary>Purple.</summary>
    Purple,

    /// <summary>Orange.</summary>
    Orange,
}

/// <summary>The background colour of a <see cref="ShapesDataset"/> item.</summary>
public enum BackgroundColor
{
    /// <summary>White.</summary>
    White,

    /// <summary>Black.</summary>
    Black,

    /// <summary>Gray ("grey" is a synonym).</summary>
    Gray,

    /// <summary>Dark blue (navy), distinct from the blue shape colour.</summary>
    Blue,

    /// <summary>Dark green, distinct from the green shape colour.</summary>
    Green,
}

/// <summary>The horizontal position of the shape in a <see cref="ShapesDataset"/> item; it is always vertically centred.</summary>
public enum ShapePosition
{
    /// <summary>Left third of the image.</summary>
    Left,

    /// <summary>Centre ("centre" and "middle" are synonyms).</summary>
    Center,

    /// <summary>Right third of the image.</summary>
    Right,
}

/// <summary>An sRGB colour, 8 bits per channel.</summary>
/// <param name="R">Red.</param>
/// <param name="G">Green.</param>
/// <param name="B">Blue.</param>
public readonly record struct Rgb(byte R, byte G, byte B);

/// <summary>One image of the Shapes dataset: a shape of one colour at one position on one background.</summary>
/// <param name="Index">Position in <see cref="ShapesDataset.Items"/> (and the item's row in the UNet's latent table).</param>
/// <param name="Shape">The shape.</param>
/// <param name="Color">The shape's colour.</param>
/// <param name="Background">The background colour.</param>
/// <param name="Position">Where the shape is.</param>
public sealed record ShapesItem(int Index, ShapeKind Shape, ShapeColor Color, BackgroundColor Background, ShapePosition Position)
{
    /// <summary>A prompt that describes exactly this item, e.g. <c>a red circle on the left, on a blue background</c>.</summary>
    public string Prompt => string.Create(CultureInfo.InvariantCulture,
        $"{(Color == ShapeColor.Orange ? "an" : "a")} {ShapesDataset.Word(Color)} {ShapesDataset.Word(Shape)} {(Position == ShapePosition.Center ? "in" : "on")} the {ShapesDataset.Word(Position)}, on a {ShapesDataset.Word(Background)} background");
}

/// <summary>
/// The data the Shapes model is built from: 3 shapes × 6 colours × 5 backgrounds × 3 positions = 270 square images,
/// drawn deterministically (integer geometry, 4×4 supersampled coverage, no floating-point library functions), so the
/// same size gives the same bytes on every machine. Exposes the attribute words and the palette so tests can check
/// generated images.
/// </summary>
public static class ShapesDataset
{
    /// <summary>The number of items (270).</summary>
    public const int ItemCount = 3 * 6 * 5 * 3;

    /// <summary>Supersampling per axis: each pixel's coverage is counted on a 4×4 grid of sample points.</summary>
    private const int Sub = 4;

    private static readonly Rgb[] s_shapeRgb =
    [
        new(220, 30, 30),   // red
        new(40, 200, 60),   // green
        new(40, 90, 235),   // blue
        new(240, 210, 30),  // yellow
        new(140, 50, 180),  // purple
        new(250, 140, 20),  // orange
    ];

    private static readonly Rgb[] s_backgroundRgb =
    [
        new(245, 245, 245), // white
        new(15, 15, 15),    // black
        new(128, 128, 128), // gray
        new(25, 40, 110),   // blue (navy)
        new(20, 90, 45),    // green (dark)
    ];

    private static readonly ShapesItem[] s_items = CreateItems();

    /// <summary>All 270 items, ordered by shape, then colour, then background, then position (index = ((s·6 + c)·5 + b)·3 + p).</summary>
    public static IReadOnlyList<ShapesItem> Items => s_items;

    /// <summary>
    /// Every word the Shapes tokenizer keeps as one token: the attribute words with their synonyms ("grey", "centre",
    /// "middle"), "on", "background", and common filler words. Other words tokenize into several tokens that the text
    /// encoder maps to zero.
    /// </summary>
    public static IReadOnlyList<string> PromptWords { get; } =
    [
        "circle", "square", "triangle",
        "red", "green", "blue", "yellow", "purple", "orange",
        "white", "black", "gray", "grey",
        "left", "center", "centre", "middle", "right",
        "on", "background",
        "a", "an", "the", "of", "in", "at", "with", "and", "shape", "colored", "coloured", "image", "picture", "photo", "side",
    ];

    /// <summary>The item with the given attributes.</summary>
    /// <param name="shape">The shape.</param>
    /// <param name="color">The shape's colour.</param>
    /// <param name="background">The background colour.</param>
    /// <param name="position">The shape's position.</param>
    public static ShapesItem GetItem(ShapeKind shape, ShapeColor color, BackgroundColor background, ShapePosition position) =>
        s_items[((((int)shape * 6) + (int)color) * 5 + (int)background) * 3 + (int)position];

    /// <summary>The RGB value a shape of this colour is drawn with.</summary>
    /// <param name="color">The shape colour.</param>
    public static Rgb GetRgb(ShapeColor color) => s_shapeRgb[(int)color];

    /// <summary>The RGB value of this background. No background colour equals a shape colour.</summary>
    /// <param name="background">The background colour.</param>
    public static Rgb GetRgb(BackgroundColor background) => s_backgroundRgb[(int)background];

    /// <summary>The prompt word for a shape (<c>circle</c>, <c>square</c>, <c>triangle</c>).</summary>
    /// <param name="shape">The shape.</param>
    public static string Word(ShapeKind shape) => shape.ToString().ToLowerInvariant();

    /// <summary>The prompt word for a shape colour (<c>red</c> …).</summary>
    /// <param name="color">The colour.</param>
    public static string Word(ShapeColor color) => color.ToString().ToLowerInvariant();

    /// <summary>The prompt word for a background colour (<c>white</c>, <c>black</c>, <c>gray</c>, <c>blue</c>, <c>green</c>).</summary>
    /// <param name="background">The background colour.</param>
    public static string Word(BackgroundColor background) => background.ToString().ToLowerInvariant();

    /// <summary>The prompt word for a position (<c>left</c>, <c>center</c>, <c>right</c>).</summary>
    /// <param name="position">The position.</param>
    public static string Word(ShapePosition position) => position.ToString().ToLowerInvariant();

    /// <summary>Reads a shape word (lower case).</summary>
    /// <param name="word">The word.</param>
    /// <param name="shape">The shape, when the word names one.</param>
    public static bool TryParseShape(string word, out ShapeKind shape) => TryParse(word, out shape);

    /// <summary>Reads a shape-colour word (lower case).</summary>
    /// <param name="word">The word.</param>
    /// <param name="color">The colour, when the word names one.</param>
    public static bool TryParseColor(string word, out ShapeColor color) => TryParse(word, out color);

    /// <summary>Reads a background-colour word (lower case; <c>grey</c> is <see cref="BackgroundColor.Gray"/>).</summary>
    /// <param name="word">The word.</param>
    /// <param name="background">The background, when the word names one.</param>
    public static bool TryParseBackground(string word, out BackgroundColor background) =>
        TryParse(word == "grey" ? "gray" : word, out background);

    /// <summary>Reads a position word (lower case; <c>centre</c> and <c>middle</c> are <see cref="ShapePosition.Center"/>).</summary>
    /// <param name="word">The word.</param>
    /// <param name="position">The position, when the word names one.</param>
    public static bool TryParsePosition(string word, out ShapePosition position) =>
        TryParse(word is "centre" or "middle" ? "center" : word, out position);

    /// <summary>
    /// Draws an item as 8-bit RGB, row-major, 3 bytes per pixel (HWC). The shape spans about 40 % of the image height,
    /// vertically centred, with its centre at 23 %, 50 % or 77 % of the width; edges are anti-aliased by coverage.
    /// </summary>
    /// <param name="item">The item.</param>
    /// <param name="size">Width and height in pixels, at least 8.</param>
    public static byte[] RenderRgb(ShapesItem item, int size)
    {
        ArgumentNullException.ThrowIfNull(item);
        return Blend(item, Coverage(item.Shape, item.Position, size));
    }

    /// <summary>Colours a coverage mask (from <see cref="Coverage"/>) with an item's shape and background colours.</summary>
    internal static byte[] Blend(ShapesItem item, byte[] coverage)
    {
        Rgb fg = GetRgb(item.Color), bg = GetRgb(item.Background);
        var rgb = new byte[coverage.Length * 3];
        for (int p = 0; p < coverage.Length; p++)
        {
            int c = coverage[p], n = Sub * Sub - c;
            // Integer blend with rounding: (bg·(16 − c) + fg·c + 8) / 16.
            rgb[3 * p] = (byte)((bg.R * n + fg.R * c + Sub * Sub / 2) / (Sub * Sub));
            rgb[3 * p + 1] = (byte)((bg.G * n + fg.G * c + Sub * Sub / 2) / (Sub * Sub));
            rgb[3 * p + 2] = (byte)((bg.B * n + fg.B * c + Sub * Sub / 2) / (Sub * Sub));
        }
        return rgb;
    }

    /// <summary>
    /// Draws an item as the VAE's input: float CHW [3, size, size] with pixels scaled to [-1, 1] (v / 127.5 − 1).
    /// </summary>
    /// <param name="item">The item.</param>
    /// <param name="size">Width and height in pixels, at least 8.</param>
    public static float[] RenderTensor(ShapesItem item, int size)
    {
        byte[] rgb = RenderRgb(item, size);
        int plane = size * size;
        var t = new float[3 * plane];
        for (int p = 0; p < plane; p++)
            for (int c = 0; c < 3; c++)
                t[c * plane + p] = rgb[3 * p + c] / 127.5f - 1f;
        return t;
    }

    /// <summary>
    /// Per-pixel coverage (0 … 16) of a shape at a position. All geometry is in integer units of 1/8 pixel: the
    /// 4×4 sample points of pixel (x, y) sit at 8x + 2s + 1, s = 0 … 3, so every inside test is exact integer math.
    /// </summary>
    internal static byte[] Coverage(ShapeKind shape, ShapePosition position, int size)
    {
        if (size < 8)
            throw new ArgumentOutOfRangeException(nameof(size), size, "The image size must be at least 8 pixels.");
        const int unit = 2 * Sub; // units per pixel
        long full = (long)unit * size;
        long cy = full / 2;
        long cx = position switch
        {
            ShapePosition.Left => full * 23 / 100,
            ShapePosition.Center => full / 2,
            _ => full * 77 / 100,
        };
        long radius = full * 20 / 100;   // circle: diameter 40 % of the height
        long halfSide = full * 18 / 100; // square: side 36 % (about the circle's area)
        long triHalfH = full * 21 / 100; // triangle: height 42 %, base 48 %
        long triHalfW = full * 24 / 100;
        // Triangle A (apex, top) → B (bottom right) → C (bottom left); inside when all edge cross products are ≥ 0.
        long ax = cx, ay = cy - triHalfH, bx = cx + triHalfW, by = cy + triHalfH, qx = cx - triHalfW, qy = by;

        bool Inside(long x, long y)
        {
            long dx = x - cx, dy = y - cy;
            return shape switch
            {
                ShapeKind.Circle => dx * dx + dy * dy <= radius * radius,
                ShapeKind.Square => Math.Abs(dx) <= halfSide && Math.Abs(dy) <= halfSide,
                _ => Cross(ax, ay, bx, by, x, y) >= 0 && Cross(bx, by, qx, qy, x, y) >= 0 && Cross(qx, qy, ax, ay, x, y) >= 0,
            };
        }

        var coverage = new byte[size * size];
        for (int py = 0; py < size; py++)
        {
            for (int px = 0; px < size; px++)
            {
                int count = 0;
                for (int sy = 0; sy < Sub; sy++)
                    for (int sx = 0; sx < Sub; sx++)
                        if (Inside((long)unit * px + 2 * sx + 1, (long)unit * py + 2 * sy + 1))
                            count++;
                coverage[py * size + px] = (byte)count;
            }
        }
        return coverage;
    }

    /// <summary>z of (E1 − E0) × (P − E0): ≥ 0 when P is on the inner side of the clockwise (screen-space) edge E0 → E1.</summary>
    private static long Cross(long x0, long y0, long x1, long y1, long px, long py) =>
        (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0);

    private static bool TryParse<T>(string word, out T value)
        where T : struct, Enum
    {
        ArgumentNullException.ThrowIfNull(word);
        foreach (T v in Enum.GetValues<T>())
        {
            if (v.ToString().Equals(word, StringComparison.OrdinalIgnoreCase))
            {
                value = v;
                return true;
            }
        }
        value = default;
        return false;
    }

    private static ShapesItem[] CreateItems()
    {
        var items = new ShapesItem[ItemCount];
        int i = 0;
        for (int s = 0; s < 3; s++)
            for (int c = 0; c < 6; c++)
                for (int b = 0; b < 5; b++)
                    for (int p = 0; p < 3; p++, i++)
                        items[i] = new ShapesItem(i, (ShapeKind)s, (ShapeColor)c, (BackgroundColor)b, (ShapePosition)p);
        return items;
    }
}
