using System;
using System.Collections.Generic;
using System.IO;
using System.Threading;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Diffusion.Persistence;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion;

/// <summary>Turns a pipeline saved with <c>mlContext.Model.Save</c> back into the library's batched stages.</summary>
public static class DiffusionPipeline
{
    /// <summary>
    /// Rebuilds a model loaded with <c>mlContext.Model.Load</c>: every saved diffusion stage becomes the exact
    /// <see cref="PromptEncodingTransformer"/>, <see cref="LatentDenoisingTransformer"/>, <see cref="LatentDecodingTransformer"/>,
    /// <see cref="ImageEncodingTransformer"/> or <see cref="DiffusionNoisingTransformer"/> on <paramref name="model"/> (mini-batched, fixed-size vector columns, your
    /// execution provider and log), and every other transformer is kept as loaded. The loaded model by itself also
    /// works, but runs the stages one row at a time on a CPU model opened from the saved folder (docs/persistence.md).
    /// Only load models from trusted sources.
    /// </summary>
    /// <param name="model">The model to run the stages on, normally loaded from the saved folder
    /// (<see cref="DiffusionPipelineDefinition.FromTransformer"/> tells which).</param>
    /// <param name="loadedModel">The transformer <c>mlContext.Model.Load</c> returned.</param>
    /// <param name="inputSchema">The input schema <c>mlContext.Model.Load</c> returned.</param>
    /// <param name="progress">Runtime-only: receives DenoiseLatents' step reports.</param>
    /// <param name="cancellationToken">Runtime-only: cancels DenoiseLatents between steps.</param>
    /// <returns>A flat chain of the stages and the other transformers, in order.</returns>
    /// <exception cref="ArgumentException">The loaded model holds no diffusion stage.</exception>
    public static TransformerChain<ITransformer> FromLoadedModel(StableDiffusionModel model, ITransformer loadedModel, DataViewSchema inputSchema,
        IProgress<DenoiseProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(loadedModel);
        ArgumentNullException.ThrowIfNull(inputSchema);
        var result = new List<ITransformer>();
        bool any = false;
        SurrogateChain.Walk(loadedModel, inputSchema, (stage, folder, _) =>
        {
            any = true;
            result.Add(stage.Build(model, progress, cancellationToken));
        }, result.Add);
        if (!any)
            throw new ArgumentException("The loaded model holds no diffusion stage (EncodePrompt, DenoiseLatents, DecodeLatents, EncodeImage, AddDiffusionNoise, PrepareInpainting).", nameof(loadedModel));
        return new TransformerChain<ITransformer>(result.ToArray());
    }

    /// <summary>
    /// Points a model loaded with <c>mlContext.Model.Load</c> at another model folder (the saved one moved, or the
    /// pipeline was saved on another machine): every saved diffusion stage is saved again, in this library's current
    /// format, on <paramref name="modelDirectory"/>; every other transformer is kept as loaded. The result runs like the
    /// loaded model (ML.NET's own transforms, one row at a time) and can be saved with <c>mlContext.Model.Save</c>, which
    /// also upgrades a model saved by an earlier version. Only load models from trusted sources.
    /// </summary>
    /// <param name="mlContext">The context to build the re-saved stages with.</param>
    /// <param name="loadedModel">The transformer <c>mlContext.Model.Load</c> returned.</param>
    /// <param name="inputSchema">
    /// The schema of the data the model will transform. For a pipeline with EncodeImage or PrepareInpainting stages pass
    /// your data's schema: the input schema <c>mlContext.Model.Load</c> returns lacks image columns (ML.NET saves none).
    /// </param>
    /// <param name="modelDirectory">The model folder to use from now on.</param>
    /// <returns>A flat chain of the re-saved stages and the other transformers, in order.</returns>
    /// <exception cref="DirectoryNotFoundException"><paramref name="modelDirectory"/> does not exist.</exception>
    /// <exception cref="ArgumentException">The loaded model holds no diffusion stage.</exception>
    public static TransformerChain<ITransformer> WithModelDirectory(MLContext mlContext, ITransformer loadedModel, DataViewSchema inputSchema, string modelDirectory)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        ArgumentNullException.ThrowIfNull(loadedModel);
        ArgumentNullException.ThrowIfNull(inputSchema);
        ArgumentException.ThrowIfNullOrWhiteSpace(modelDirectory);
        string folder = Path.GetFullPath(modelDirectory);
        if (!Directory.Exists(folder))
            throw new DirectoryNotFoundException($"The model folder '{folder}' does not exist.");
        var result = new List<ITransformer>();
        bool any = false;
        SurrogateChain.Walk(loadedModel, inputSchema, (stage, _, schema) =>
        {
            any = true;
            result.Add(SurrogateChain.Build(mlContext, stage, folder, schema!));
        }, result.Add);
        if (!any)
            throw new ArgumentException("The loaded model holds no diffusion stage (EncodePrompt, DenoiseLatents, DecodeLatents, EncodeImage, AddDiffusionNoise, PrepareInpainting).", nameof(loadedModel));
        return new TransformerChain<ITransformer>(result.ToArray());
    }

    /// <summary>
    /// Loads the model folder a loaded pipeline references and rebuilds its stages on it
    /// (<see cref="FromLoadedModel(StableDiffusionModel, ITransformer, DataViewSchema, IProgress{DenoiseProgress}?, CancellationToken)"/>).
    /// Dispose the returned model when done. Only load models from trusted sources.
    /// </summary>
    /// <param name="mlContext">The context to load the model folder with.</param>
    /// <param name="loadedModel">The transformer <c>mlContext.Model.Load</c> returned.</param>
    /// <param name="inputSchema">The input schema <c>mlContext.Model.Load</c> returned.</param>
    /// <param name="pipeline">The rebuilt pipeline.</param>
    /// <param name="options">Options for loading the model folder.</param>
    /// <returns>The loaded model, which the pipeline's stages use.</returns>
    /// <exception cref="DirectoryNotFoundException">The saved model folder does not exist any more (the message names it).</exception>
    public static StableDiffusionModel LoadModel(MLContext mlContext, ITransformer loadedModel, DataViewSchema inputSchema,
        out TransformerChain<ITransformer> pipeline, StableDiffusionModelOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        var definition = DiffusionPipelineDefinition.FromTransformer(loadedModel, inputSchema);
        if (!Directory.Exists(definition.ModelDirectory))
            throw new DirectoryNotFoundException(SurrogateChain.MovedMessage(definition.ModelDirectory));
        var model = StableDiffusionModel.Load(mlContext, definition.ModelDirectory, options);
        try
        {
            pipeline = FromLoadedModel(model, loadedModel, inputSchema);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
