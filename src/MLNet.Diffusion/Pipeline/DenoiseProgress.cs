using System;

namespace MLNet.Diffusion;

/// <summary>Progress of the denoising loop, reported after every step of a mini-batch.</summary>
/// <param name="Step">The step just completed, from 1.</param>
/// <param name="TotalSteps">Steps in this run (UNet evaluations).</param>
/// <param name="Timestep">The scheduler timestep of the step.</param>
/// <param name="FirstRow">Position of the batch's first row in the data view.</param>
/// <param name="RowCount">Rows in the batch.</param>
/// <param name="Elapsed">Time since the batch started.</param>
public readonly record struct DenoiseProgress(int Step, int TotalSteps, float Timestep, long FirstRow, int RowCount, TimeSpan Elapsed);
