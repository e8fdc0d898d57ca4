using System;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.ML;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Orleans;
using MLNet.Diffusion.Tests.Shapes;
using Orleans.TestingHost;

namespace MLNet.Diffusion.Tests.Orleans;

/// <summary>
/// Issue 19: jobs on an in-process cluster of three silos (Microsoft.Orleans.TestingHost), each silo with one CPU worker
/// on the Shapes model at 64×64. One cluster serves the class; the test that kills a silo starts a new one afterwards.
/// </summary>
[TestClass]
public sealed class DistributedJobTests
{
    private static TestCluster s_cluster = null!;
    private static StableDiffusionModel s_model = null!;

    [ClassInitialize]
    public static async Task StartCluster(TestContext context)
    {
        _ = OrleansJobs.Definition;
        s_model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder, OrleansJobs.ModelOptions);
        var builder = new TestClusterBuilder(3);
        builder.Options.ConfigureFileLogging = false; // no logs/ folder in the working directory
        builder.AddSiloBuilderConfigurator<DiffusionSiloConfigurator>();
        builder.AddClientBuilderConfigurator<DiffusionClientConfigurator>();
        s_cluster = builder.Build();
        await s_cluster.DeployAsync();
    }

    [ClassCleanup]
    public static async Task StopCluster()
    {
        await s_cluster.StopAllSilosAsync();
        await s_cluster.DisposeAsync();
        s_model.Dispose();
    }

    public TestContext TestContext { get; set; } = null!;

    private static DiffusionJob Job(string id, int rows, string sink, int shardSize = 8)
        => DiffusionJob.Create(id, OrleansJobs.Definition, OrleansJobs.Rows(rows), sink, shardSize: shardSize, leaseTimeout: TimeSpan.FromSeconds(3));

    [TestMethod]
    public async Task TwoHundredRowsWithASiloKilledMidwayAreEachWrittenOnceWithTheBytesOfASingleProcessRun()
    {
        string dir = OrleansJobs.NewDirectory("kill");
        try
        {
            // The silo to kill hosts the job's coordinator (a secondary one: the primary holds the test cluster's membership),
            // so the client must submit the job again, besides the killed worker's shard being run elsewhere.
            var (job, victim) = await JobCoordinatedOnASecondarySilo(200, Path.Combine(dir, "cluster"));
            var local = await LocalDiffusionJob.RunAsync(job with { SinkLocation = Path.Combine(dir, "local") }, s_model);
            Assert.AreEqual(200L, local.Written);

            var midway = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var progress = new Progress<DiffusionJobStatus>(s =>
            {
                if (s.Written >= 60)
                    midway.TrySetResult();
            });
            var run = s_cluster.Client.RunDiffusionJobAsync(job, progress, TimeSpan.FromMilliseconds(100));
            await Task.WhenAny(midway.Task, run);
            long writtenAtKill = Directory.Exists(job.SinkLocation) ? Directory.GetFiles(job.SinkLocation, "*.png").Length : 0;
            Assert.IsFalse(run.IsCompleted, "the job finished before a silo could be killed");
            await s_cluster.KillSiloAsync(victim);
            var status = await run;
            TestContext.WriteLine($"killed {victim.SiloAddress} at {writtenAtKill} rows; final: {status}");

            Assert.IsTrue(status.IsCompleted);
            Assert.AreEqual((0L, 0L), (status.FailedCount, status.Written + status.Skipped - 200), "every row has exactly one outcome");
            Assert.AreNotEqual(victim.SiloAddress.ToString(), status.CoordinatorSilo, "the coordinator was activated again elsewhere");
            Assert.IsTrue(status.Skipped >= writtenAtKill, "the resubmitted job skipped the rows the sink had when the silo died");
            var expected = OrleansJobs.Pngs(Path.Combine(dir, "local"));
            var actual = OrleansJobs.Pngs(Path.Combine(dir, "cluster"));
            CollectionAssert.AreEqual(Enumerable.Range(0, 200).Select(i => PngFolderResultSink.FileName(i)).ToArray(), actual.Keys.ToArray(),
                "one PNG per row and nothing else (no temporary file)");
            foreach (var (name, bytes) in expected)
                CollectionAssert.AreEqual(bytes, actual[name], name);
            Assert.AreEqual("a red circle", PngFile.ReadParameters(Path.Combine(dir, "cluster", "row-000000.png"))!.Prompt);
        }
        finally
        {
            await s_cluster.StartAdditionalSilosAsync(1);
            Directory.Delete(dir, true);
        }
    }

    /// <summary>A job whose coordinator grain is activated on a secondary silo (placement is random: try fresh ids).</summary>
    private static async Task<(DiffusionJob Job, SiloHandle Silo)> JobCoordinatedOnASecondarySilo(int rows, string sink)
    {
        for (int attempt = 0; attempt < 50; attempt++)
        {
            string id = "kill-" + Guid.NewGuid().ToString("N")[..6];
            var where = await s_cluster.Client.GetGrain<IDiffusionJobGrain>(id).GetStatusAsync();
            var silo = s_cluster.SecondarySilos.FirstOrDefault(h => h.SiloAddress.ToString() == where.CoordinatorSilo);
            if (silo is not null)
                return (Job(id, rows, sink), silo);
        }
        throw new AssertFailedException("50 coordinators were all placed on the primary silo");
    }

    [TestMethod]
    public async Task AShardLeasedToAWorkerThatNeverReportsIsLeasedAgainAfterItsTimeout()
    {
        string dir = OrleansJobs.NewDirectory("ghost");
        try
        {
            var job = Job("ghost-" + Guid.NewGuid().ToString("N")[..6], 48, dir) with { LeaseTimeout = TimeSpan.FromMilliseconds(500) };
            var coordinator = s_cluster.Client.GetGrain<IDiffusionJobGrain>(job.JobId);
            await coordinator.SubmitAsync(job);
            // A worker that leases a shard and dies before writing a row.
            var ghost = await coordinator.LeaseAsync("ghost");
            Assert.IsNotNull(ghost);
            var status = await s_cluster.Client.RunDiffusionJobAsync(job, pollInterval: TimeSpan.FromMilliseconds(50));

            Assert.IsTrue(status.IsCompleted);
            Assert.AreEqual((48L, 1), (status.Written, status.ShardsReissued));
            for (int i = 0; i < ghost!.Rows.Length; i++)
                Assert.IsTrue(File.Exists(Path.Combine(dir, PngFolderResultSink.FileName(ghost.FirstRow + i))));
            Assert.IsFalse(await coordinator.ReportAsync(ghost.LeaseId, Array.Empty<DiffusionRowOutcome>()), "a lease taken back tells its worker to stop");
            Assert.AreEqual(48, Directory.GetFiles(dir).Length);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public async Task CancelingAJobStopsEveryWorkerWithinTheShardItHolds()
    {
        string dir = OrleansJobs.NewDirectory("cancel");
        try
        {
            const int shardSize = 8;
            var job = Job("cancel-" + Guid.NewGuid().ToString("N")[..6], 200, dir, shardSize);
            using var cancel = new CancellationTokenSource();
            long writtenAtCancel = -1;
            var progress = new Progress<DiffusionJobStatus>(s =>
            {
                if (s.Written >= 16 && writtenAtCancel < 0)
                {
                    writtenAtCancel = s.Written;
                    cancel.Cancel();
                }
            });
            var status = await s_cluster.Client.RunDiffusionJobAsync(job, progress, TimeSpan.FromMilliseconds(50), cancel.Token);

            Assert.IsTrue(status.IsCanceled);
            Assert.AreEqual(0, status.ActiveLeases, "returned once no shard is leased");
            int files = Directory.GetFiles(dir, "*.png").Length;
            Assert.AreEqual(status.Written, files);
            // Each of the three workers finishes at most the shard it held (and the status poll lags by at most one row each).
            int workers = s_cluster.Silos.Count;
            Assert.IsTrue(files <= writtenAtCancel + workers * shardSize, $"{files} rows written, {writtenAtCancel} when canceled");
            Assert.IsTrue(files < 200);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public async Task ABadRowIsReportedWithItsIndexAndTheOtherRowsAreWritten()
    {
        string dir = OrleansJobs.NewDirectory("bad");
        try
        {
            var rows = OrleansJobs.Rows(24);
            rows[5] = rows[5] with { Scheduler = "no-such-scheduler" };
            rows[17] = rows[17] with { Width = 60 };
            var job = DiffusionJob.Create("bad-" + Guid.NewGuid().ToString("N")[..6], OrleansJobs.Definition, rows, dir, shardSize: 8, leaseTimeout: TimeSpan.FromSeconds(3));
            var status = await s_cluster.Client.RunDiffusionJobAsync(job, pollInterval: TimeSpan.FromMilliseconds(50));

            Assert.IsTrue(status.IsCompleted);
            Assert.AreEqual((22L, 2L), (status.Written, status.FailedCount));
            var failures = status.Failures.OrderBy(f => f.RowIndex).ToArray();
            CollectionAssert.AreEqual(new[] { 5L, 17L }, failures.Select(f => f.RowIndex).ToArray());
            StringAssert.Contains(failures[0].Message, "no-such-scheduler");
            StringAssert.Contains(failures[1].Message, "60");
            Assert.IsFalse(File.Exists(Path.Combine(dir, PngFolderResultSink.FileName(5))));
            Assert.IsTrue(File.Exists(Path.Combine(dir, PngFolderResultSink.FileName(6))), "a row of the bad row's settings group is written");
            Assert.AreEqual(22, Directory.GetFiles(dir, "*.png").Length);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public async Task ResubmittingAJobSkipsTheRowsAlreadyInTheSinkAndRewritesOnlyTheMissingOnes()
    {
        string dir = OrleansJobs.NewDirectory("resume");
        try
        {
            var job = Job("resume-" + Guid.NewGuid().ToString("N")[..6], 24, dir);
            var first = await s_cluster.Client.RunDiffusionJobAsync(job, pollInterval: TimeSpan.FromMilliseconds(50));
            Assert.AreEqual(24L, first.Written);
            var before = OrleansJobs.Pngs(dir);
            foreach (int row in new[] { 3, 10, 20 })
                File.Delete(Path.Combine(dir, PngFolderResultSink.FileName(row)));

            var second = await s_cluster.Client.RunDiffusionJobAsync(job, pollInterval: TimeSpan.FromMilliseconds(50));
            Assert.AreEqual((3L, 21L, 0L), (second.Written, second.Skipped, second.FailedCount));
            var after = OrleansJobs.Pngs(dir);
            CollectionAssert.AreEqual(before.Keys.ToArray(), after.Keys.ToArray());
            foreach (var (name, bytes) in before)
                CollectionAssert.AreEqual(bytes, after[name], name);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void AJobWhosePipelineHasNoSeedColumnIsRefusedBeforeItReachesTheCluster()
    {
        var definition = OrleansJobs.Definition;
        var unseeded = new DiffusionPipelineDefinition
        {
            ModelDirectory = definition.ModelDirectory,
            Stages = definition.Stages.Select(s => s is DenoiseLatentsStageDefinition d ? d with { SeedColumnName = null } : s).ToArray(),
        };
        var e = Assert.ThrowsExactly<ArgumentException>(() => DiffusionJob.Create("j", unseeded, OrleansJobs.Rows(2), "out"));
        StringAssert.Contains(e.Message, "seed column");
        Assert.ThrowsExactly<ArgumentException>(() => DiffusionJob.Create("bad id/..", definition, OrleansJobs.Rows(2), "out"));
        Assert.ThrowsExactly<ArgumentException>(() => DiffusionJob.Create("j", definition, Array.Empty<DiffusionJobRow>(), "out"));
    }
}
