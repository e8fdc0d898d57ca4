using System;
using System.IO;
using Microsoft.ML.Data;

namespace MLNet.Diffusion.Imaging;

/// <summary>
/// Reads a picture file into an <see cref="MLImage"/> with errors that name the file: ML.NET's
/// <see cref="MLImage.CreateFromFile(string)"/> reports a file it cannot decode as "Invalid path (Parameter 'imagePath')".
/// </summary>
public static class ImageFile
{
    /// <summary>Decodes a picture file (any format SkiaSharp reads: PNG, JPEG, BMP, GIF, WebP, …).</summary>
    /// <param name="path">The file to read.</param>
    /// <returns>The decoded image; the caller disposes it.</returns>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file exists but is not a picture SkiaSharp can decode.</exception>
    public static MLImage Load(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (Directory.Exists(path))
            throw new FileNotFoundException($"Image file '{path}' is a directory, not a file.", path);
        if (!File.Exists(path))
            throw new FileNotFoundException($"Image file '{path}' does not exist.", path);
        try
        {
            return MLImage.CreateFromFile(path);
        }
        catch (ArgumentException e)
        {
            // MLImage.CreateFromFile throws ArgumentException("Invalid path", "imagePath") when SkiaSharp returns no bitmap.
            throw new InvalidDataException($"Image file '{path}' could not be decoded as an image (PNG, JPEG, BMP, GIF or WebP expected).", e);
        }
    }
}
