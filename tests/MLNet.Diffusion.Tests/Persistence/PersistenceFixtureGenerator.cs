using System;
using System.IO;
using Microsoft.ML;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace MLNet.Diffusion.Tests.Persistence;

/// <summary>
/// Writes the persistence fixtures (Persistence/Fixtures/README.md) with the code of the day. It runs only when
/// <c>MLNET_DIFFUSION_WRITE_FIXTURES=1</c>: the committed files pin what an earlier version saved, and regenerating them
/// would hide a broken reader.
/// </summary>
[TestClass]
public sealed class PersistenceFixtureGenerator
{
    /// <summary>The environment variable that turns the generator on.</summary>
    public const string Switch = "MLNET_DIFFUSION_WRITE_FIXTURES";

    [TestMethod]
    [TestCategory("PersistenceFixtureGeneration")]
    [WhenEnvironmentVariableIsOne(Switch)]
    public void WriteTheFixtures()
    {
        Directory.CreateDirectory(PersistenceFixtures.Directory());
        foreach (var scenario in PersistenceFixtures.All)
        {
            using var model = StableDiffusionModel.Load(new MLContext(seed: 1), scenario.Folder());
            var data = scenario.Input(model.MLContext);
            var fitted = scenario.Fit(model, data);
            var expected = scenario.Read(fitted.Transform(data));
            model.MLContext.Model.Save(fitted, data.Schema, scenario.ZipPath);
            DiffusionPipelineDefinition.FromTransformer(fitted).Save(scenario.DefinitionPath);
            expected.Save(scenario.ExpectedPath);

            // What was saved gives the same outputs in a fresh context (as every persistence test checks).
            var ml = new MLContext(seed: 99);
            var loaded = ml.Model.Load(scenario.ZipPath, out _);
            var differences = expected.Differences(scenario.Read(loaded.Transform(scenario.Input(ml))));
            Assert.AreEqual(0, differences.Count, $"{scenario.Name}: " + string.Join("; ", differences));
        }
    }
}

/// <summary>Runs a test only when an environment variable is "1" (reported as skipped otherwise).</summary>
[AttributeUsage(AttributeTargets.Method)]
internal sealed class WhenEnvironmentVariableIsOneAttribute : ConditionBaseAttribute
{
    public WhenEnvironmentVariableIsOneAttribute(string name)
        : base(ConditionMode.Include)
    {
        Name = name;
        IgnoreMessage = $"Runs only with {name}=1 (see Persistence/Fixtures/README.md).";
    }

    /// <summary>The variable.</summary>
    public string Name { get; }

    public override bool IsConditionMet => Environment.GetEnvironmentVariable(Name) == "1";

    public override string GroupName => nameof(WhenEnvironmentVariableIsOneAttribute);
}
