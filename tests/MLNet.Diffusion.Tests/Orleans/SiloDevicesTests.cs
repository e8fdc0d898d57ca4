using System;
using System.IO;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.ML;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Orleans;
using MLNet.Diffusion.Tests.Shapes;
using Orleans.Hosting;
using Orleans.TestingHost;

namespace MLNet.Diffusion.Tests.Orleans;

/// <summary>
/// A silo's devices are a <see cref="DeviceList"/>, as for a model in one process: one silo configured with
/// <c>DeviceList.Cpu(2)</c> runs two workers at once, and their PNGs are the bytes of a single-process run.
/// </summary>
[TestClass]
public sealed class SiloDevicesTests
{
    [TestMethod]
    public async Task ASiloWithTwoCpuDevicesRunsTwoWorkersAtOnceAndWritesTheBytesOfASingleProcessRun()
    {
        string dir = OrleansJobs.NewDirectory("devices");
        MeetingSinkProvider.Reset();
        var builder = new TestClusterBuilder(1);
        builder.Options.ConfigureFileLogging = false; // no logs/ folder in the working directory
        builder.AddSiloBuilderConfigurator<TwoCpuDevicesSiloConfigurator>();
        builder.AddClientBuilderConfigurator<DiffusionClientConfigurator>();
        var cluster = builder.Build();
        try
        {
            await cluster.DeployAsync();
            var job = DiffusionJob.Create("two-devices", OrleansJobs.Definition, OrleansJobs.Rows(24), Path.Combine(dir, "cluster"), shardSize: 3, leaseTimeout: TimeSpan.FromSeconds(30));
            using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
            var status = await cluster.Client.RunDiffusionJobAsync(job, pollInterval: TimeSpan.FromMilliseconds(50), cancellationToken: timeout.Token);
            Assert.AreEqual((24L, 0L, 0L), (status.Written, status.Skipped, status.FailedCount));
            // The first row written waited for a second one: only a second worker of the silo could write it meanwhile.
            Assert.IsTrue(MeetingSinkProvider.SecondWorkerMet, "no second worker wrote a row while the first worker's first write waited");

            using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder, OrleansJobs.ModelOptions);
            var local = await LocalDiffusionJob.RunAsync(job with { SinkLocation = Path.Combine(dir, "local") }, model);
            Assert.AreEqual(24L, local.Written);
            var expected = OrleansJobs.Pngs(Path.Combine(dir, "local"));
            var actual = OrleansJobs.Pngs(Path.Combine(dir, "cluster"));
            CollectionAssert.AreEqual(expected.Keys, actual.Keys);
            foreach (var (name, bytes) in expected)
                CollectionAssert.AreEqual(bytes, actual[name], name);
        }
        finally
        {
            await cluster.StopAllSilosAsync();
            await cluster.DisposeAsync();
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void ADeviceOutsideTheListIsRefusedBeforeAnythingLoads()
    {
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => DeviceList.Cpu(2).LoadModel(new MLContext(1), ShapesTestModel.Folder, 2));
        StringAssert.Contains(e.Message, "2 device(s)");
    }
}

/// <summary>One silo with two CPU workers (one ONNX thread each, as the single-process reference) and the meeting sink.</summary>
public sealed class TwoCpuDevicesSiloConfigurator : ISiloConfigurator
{
    /// <inheritdoc/>
    public void Configure(ISiloBuilder siloBuilder)
    {
        siloBuilder.AddDiffusionWorkers(DeviceList.Cpu(2, threadsPerInstance: 1), o => o.IdlePollInterval = TimeSpan.FromMilliseconds(50));
        siloBuilder.Services.AddSingleton<IDiffusionResultSinkProvider, MeetingSinkProvider>();
    }
}

/// <summary>
/// The PNG folder sink, except that the job's first write waits (up to a minute) for a second write to start. A worker
/// writes its rows one after the other, so that second write can only come from another worker of the silo.
/// </summary>
internal sealed class MeetingSinkProvider : IDiffusionResultSinkProvider
{
    private static int s_writes;
    private static TaskCompletionSource s_second = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public static bool SecondWorkerMet { get; private set; }

    public static void Reset()
    {
        s_writes = 0;
        s_second = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        SecondWorkerMet = false;
    }

    public IDiffusionResultSink Open(string jobId, string location) => new Sink(new PngFolderResultSink(location));

    private sealed class Sink(PngFolderResultSink inner) : IDiffusionResultSink
    {
        public ValueTask<bool> ContainsAsync(long rowIndex, CancellationToken cancellationToken) => inner.ContainsAsync(rowIndex, cancellationToken);

        public async ValueTask WriteAsync(DiffusionRowResult result, CancellationToken cancellationToken)
        {
            if (Interlocked.Increment(ref s_writes) == 1)
            {
                try
                {
                    await s_second.Task.WaitAsync(TimeSpan.FromMinutes(1), cancellationToken).ConfigureAwait(false);
                    SecondWorkerMet = true;
                }
                catch (TimeoutException)
                {
                    SecondWorkerMet = false;
                }
            }
            else
            {
                s_second.TrySetResult();
            }
            await inner.WriteAsync(result, cancellationToken).ConfigureAwait(false);
        }
    }
}
