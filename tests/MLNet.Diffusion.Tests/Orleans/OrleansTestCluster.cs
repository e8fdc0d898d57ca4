using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.ML;
using MLNet.Diffusion.Orleans;
using MLNet.Diffusion.Tests.Shapes;
using Orleans.Configuration;
using Orleans.Hosting;
using Orleans.TestingHost;

namespace MLNet.Diffusion.Tests.Orleans;

/// <summary>What the Orleans tests share: the Shapes job at 64×64, the model options of every worker, the silos' configuration.</summary>
internal static class OrleansJobs
{
    /// <summary>One ONNX thread per model: three silos' workers share two cores; the local reference uses the same options.</summary>
    public static readonly StableDiffusionModelOptions ModelOptions = new() { IntraOpNumThreads = 1 };

    private static readonly Lazy<DiffusionPipelineDefinition> s_definition = new(BuildDefinition);

    /// <summary>EncodePrompt → DenoiseLatents (4 steps, 64×64, seed column) → DecodeLatents on the Shapes model, as its persisted form.</summary>
    public static DiffusionPipelineDefinition Definition => s_definition.Value;

    /// <summary>Rows of Shapes prompts with distinct seeds.</summary>
    public static DiffusionJobRow[] Rows(int count)
    {
        string[] shapes = { "circle", "square", "triangle" };
        string[] colors = { "red", "green", "blue", "yellow", "purple" };
        return Enumerable.Range(0, count).Select(i => new DiffusionJobRow
        {
            Prompt = $"a {colors[i % colors.Length]} {shapes[i / colors.Length % shapes.Length]}",
            NegativePrompt = i % 7 == 0 ? "blue" : string.Empty,
            Seed = 1000 + i,
        }).ToArray();
    }

    public static string NewDirectory(string what)
    {
        string dir = Path.Combine(Path.GetTempPath(), "mlnet-orleans-" + what + "-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>The PNGs of a sink folder by file name (no temporary files may remain).</summary>
    public static SortedDictionary<string, byte[]> Pngs(string folder)
        => new(Directory.GetFiles(folder).ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes), StringComparer.Ordinal);

    private static DiffusionPipelineDefinition BuildDefinition()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder, ModelOptions);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { new { Prompt = "a red circle", NegativePrompt = string.Empty, Seed = 1L } });
        var fitted = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt", "NegativePrompt")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions { Steps = 4, Width = 64, Height = 64, SeedColumnName = "Seed", BatchSize = 4 }))
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Latents", new DecodeLatentsOptions { BatchSize = 4 }))
            .Fit(data);
        return DiffusionPipelineDefinition.FromTransformer(fitted);
    }
}

/// <summary>
/// Each test silo: the diffusion workers (one CPU worker, polling often) and membership settings that declare a killed
/// silo dead within a few seconds (Orleans' defaults take a minute, which is right for a real cluster).
/// </summary>
public sealed class DiffusionSiloConfigurator : ISiloConfigurator
{
    /// <inheritdoc/>
    public void Configure(ISiloBuilder siloBuilder)
    {
        siloBuilder.AddDiffusionWorkers(DeviceList.Cpu(1), o =>
        {
            o.ModelOptions = OrleansJobs.ModelOptions;
            o.IdlePollInterval = TimeSpan.FromMilliseconds(50);
        });
        siloBuilder.Services.Configure<ClusterMembershipOptions>(o =>
        {
            o.ProbeTimeout = TimeSpan.FromMilliseconds(500);
            o.NumMissedProbesLimit = 2;
            o.NumVotesForDeathDeclaration = 1;
        });
        siloBuilder.Services.Configure<SiloMessagingOptions>(o => o.ResponseTimeout = TimeSpan.FromSeconds(5));
    }
}

/// <summary>The test client: short response timeouts, so a call to a killed silo fails fast and is retried.</summary>
public sealed class DiffusionClientConfigurator : IClientBuilderConfigurator
{
    /// <inheritdoc/>
    public void Configure(Microsoft.Extensions.Configuration.IConfiguration configuration, global::Orleans.Hosting.IClientBuilder clientBuilder)
        => clientBuilder.Services.Configure<ClientMessagingOptions>(o => o.ResponseTimeout = TimeSpan.FromSeconds(5));
}
