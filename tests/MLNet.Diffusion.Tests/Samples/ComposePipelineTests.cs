using System;
using System.IO;
using System.Linq;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace MLNet.Diffusion.Tests.Samples;

[TestClass]
public sealed class ComposePipelineTests
{
    [TestMethod]
    [DoNotParallelize] // redirects Console.Out
    public void TheComposedPipelineMeasuresTheGeneratedColours()
    {
        var previous = Console.Out;
        var output = new StringWriter();
        Console.SetOut(output);
        int code;
        try
        {
            code = ComposePipeline.Program.Main(Array.Empty<string>());
        }
        finally
        {
            Console.SetOut(previous);
        }
        Assert.AreEqual(0, code, output.ToString());
        var rows = output.ToString().Split('\n').Where(l => l.StartsWith("a ", StringComparison.Ordinal)).ToArray();
        Assert.AreEqual(3, rows.Length, output.ToString());
        double[] Means(string line) => line.Split(' ', StringSplitOptions.RemoveEmptyEntries).TakeLast(3).Select(v => double.Parse(v, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
        var red = Means(rows[0]);
        var blue = Means(rows[1]);
        var yellowOnGreen = Means(rows[2]);
        Assert.IsTrue(red[0] > red[1] + 10 && red.Min() > 150, "a red circle on white: bright, red-heavy");
        Assert.IsTrue(blue[2] > blue[0] + 10 && blue.Max() < 100, "a blue square on black: dark, blue-heavy");
        Assert.IsTrue(yellowOnGreen[1] > yellowOnGreen[2] + 30, "a yellow triangle on green: green-heavy");
    }
}
