using System;
using System.IO;
using System.Linq;
using System.Text.Json;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion.Tests.Schedulers;

/// <summary>
/// The scheduler registry and the options records: a scheduler by name, by diffusers class name or as options; options
/// override the folder's config key by key; unknown names and classes are errors that list the known ones.
/// </summary>
[TestClass]
public sealed class SchedulerRegistryTests : SchedulerTestBase
{
    [TestMethod]
    public void EveryClassNameGivesTheSchedulerOfItsName()
    {
        var config = LinearConfig();
        Assert.AreEqual(9, SchedulerFactory.ClassNames.Count);
        foreach (string cls in SchedulerFactory.ClassNames)
        {
            var byClass = SchedulerFactory.Create(cls, config);
            var byConfig = SchedulerFactory.CreateDefault(config with { ClassName = cls });
            Assert.AreEqual(byClass.GetType(), byConfig.GetType(), cls);
            Assert.AreEqual(byClass.GetType(), SchedulerFactory.Create(byClass.Name, config).GetType(), cls);
            SchedulerOptions converted = cls;
            Assert.AreEqual(SchedulerFactory.GetOptions(byClass.Name), converted, cls);
        }
        Assert.IsInstanceOfType<EulerAncestralDiscreteScheduler>(SchedulerFactory.Create("EulerAncestralDiscreteScheduler", config));
        Assert.IsInstanceOfType<DpmSolverMultistepScheduler>(SchedulerFactory.Create("DPMSolverMultistepScheduler", config));
    }

    [TestMethod]
    public void AnUnknownClassNameIsAnErrorThatNamesItAndListsTheKnownOnes()
    {
        // diffusers' UniPC is not implemented here; before the registry this config silently got DDIM.
        var e = Assert.ThrowsExactly<ArgumentException>(() => SchedulerFactory.CreateDefault(SchedulerConfig.Parse("{\"_class_name\": \"UniPCMultistepScheduler\"}")));
        StringAssert.Contains(e.Message, "'UniPCMultistepScheduler'");
        StringAssert.Contains(e.Message, "EulerAncestralDiscreteScheduler");
        StringAssert.Contains(e.Message, "dpmpp-2m-karras");
        var none = Assert.ThrowsExactly<ArgumentException>(() => SchedulerFactory.CreateDefault(LinearConfig()));
        StringAssert.Contains(none.Message, "no _class_name");
        StringAssert.Contains(none.Message, "DDIMScheduler");
    }

    [TestMethod]
    public void AnUnknownNameListsTheNamesAndTheClasses()
    {
        var e = Assert.ThrowsExactly<ArgumentException>(() => SchedulerFactory.GetOptions("UniPCMultistepScheduler"));
        StringAssert.Contains(e.Message, "'UniPCMultistepScheduler'");
        StringAssert.Contains(e.Message, "euler-a");
        StringAssert.Contains(e.Message, "LCMScheduler");
        var converted = Assert.ThrowsExactly<ArgumentException>(() => { SchedulerOptions o = "k_euler"; });
        StringAssert.Contains(converted.Message, "'k_euler'");
    }

    [TestMethod]
    public void TimestepSpacingOverridesTheFolderConfig()
    {
        // Lin et al. 2023 (Table 2) and diffusers' DDIMScheduler: 10 of 1000 steps, trailing → 999, 899, …, 99;
        // the config's own leading spacing with steps_offset 1 → 901, 801, …, 1.
        var config = LinearConfig() with { StepsOffset = 1 };
        var leading = SchedulerFactory.Create("ddim", config);
        leading.SetTimesteps(10);
        CollectionAssert.AreEqual(Enumerable.Range(0, 10).Select(i => 901f - 100 * i).ToArray(), leading.Timesteps.ToArray());
        var trailing = SchedulerFactory.Create(new DdimSchedulerOptions { TimestepSpacing = "trailing" }, config);
        trailing.SetTimesteps(10);
        CollectionAssert.AreEqual(Enumerable.Range(0, 10).Select(i => 999f - 100 * i).ToArray(), trailing.Timesteps.ToArray());
        Assert.AreEqual("leading", config.TimestepSpacing, "the folder's config is not changed");
    }

    [TestMethod]
    public void KarrasByOptionEqualsTheKarrasName_AndNullKeepsTheFoldersKey()
    {
        var config = SchedulerConfig.StableDiffusion1;
        foreach (var (name, options) in new (string, SchedulerOptions)[]
        {
            ("euler-karras", new EulerDiscreteSchedulerOptions { UseKarrasSigmas = true }),
            ("dpmpp-2m-karras", new DpmSolverMultistepSchedulerOptions { UseKarrasSigmas = true }),
            ("lms-karras", new LmsDiscreteSchedulerOptions { UseKarrasSigmas = true }),
            ("heun-karras", new HeunDiscreteSchedulerOptions { UseKarrasSigmas = true }),
        })
        {
            var byName = (SigmaScheduler)SchedulerFactory.Create(name, config);
            var byOptions = (SigmaScheduler)SchedulerFactory.Create(options, config);
            byName.SetTimesteps(12);
            byOptions.SetTimesteps(12);
            Assert.AreEqual(name, byOptions.Name);
            CollectionAssert.AreEqual(byName.Sigmas.ToArray(), byOptions.Sigmas.ToArray(), name);
            Assert.AreEqual(options, SchedulerFactory.GetOptions(name), name);
        }
        // "euler" leaves use_karras_sigmas to the folder, as diffusers' from_config does.
        Assert.AreEqual("euler-karras", SchedulerFactory.Create("euler", config with { UseKarrasSigmas = true }).Name);
        Assert.AreEqual("euler", SchedulerFactory.Create(new EulerDiscreteSchedulerOptions { UseKarrasSigmas = false }, config with { UseKarrasSigmas = true }).Name);
    }

    [TestMethod]
    public void EveryFamilysKeysReachItsScheduler()
    {
        var config = SchedulerConfig.StableDiffusion1;
        var ddim = (DdimScheduler)SchedulerFactory.Create(new DdimSchedulerOptions { Eta = 0.25f, ClipSample = true, ClipSampleRange = 2, SetAlphaToOne = false, RescaleBetasZeroSnr = true }, config);
        Assert.AreEqual(0.25f, ddim.Eta);
        Assert.IsTrue(ddim.Config.ClipSample);
        Assert.AreEqual(2.0, ddim.Config.ClipSampleRange);
        Assert.IsFalse(ddim.Config.SetAlphaToOne);
        Assert.IsTrue(ddim.Config.RescaleBetasZeroSnr);
        var ddpm = SchedulerFactory.Create(new DdpmSchedulerOptions { VarianceType = "fixed_large", PredictionType = "v_prediction" }, config);
        Assert.AreEqual("fixed_large", ddpm.Config.VarianceType);
        Assert.AreEqual("v_prediction", ddpm.Config.PredictionType);
        var dpm = SchedulerFactory.Create(new DpmSolverMultistepSchedulerOptions { SolverOrder = 1, SolverType = "heun", LowerOrderFinal = false, EulerAtFinal = true, FinalSigmasType = "sigma_min" }, config);
        Assert.AreEqual(1, dpm.Config.SolverOrder);
        Assert.AreEqual("heun", dpm.Config.SolverType);
        Assert.IsFalse(dpm.Config.LowerOrderFinal);
        Assert.IsTrue(dpm.Config.EulerAtFinal);
        Assert.AreEqual("sigma_min", dpm.Config.FinalSigmasType);
        var pndm = (PndmScheduler)SchedulerFactory.Create(new PndmSchedulerOptions { SkipPrkSteps = false, SetAlphaToOne = true, StepsOffset = 0 }, config);
        Assert.IsFalse(pndm.Config.SkipPrkSteps);
        Assert.AreEqual(1f, pndm.FinalAlphaCumprod);
        Assert.AreEqual(0, pndm.Config.StepsOffset);
        var lcm = (LcmScheduler)SchedulerFactory.Create(new LcmSchedulerOptions { OriginalInferenceSteps = 25, TimestepScaling = 5 }, config);
        Assert.AreEqual(25, lcm.Config.OriginalInferenceSteps);
        Assert.AreEqual(5.0, lcm.Config.TimestepScaling);
        var heun = SchedulerFactory.Create(new HeunDiscreteSchedulerOptions { ClipSample = true }, config);
        Assert.IsTrue(heun.Config.ClipSample);
        var eulerA = SchedulerFactory.Create(new EulerAncestralDiscreteSchedulerOptions { RescaleBetasZeroSnr = true }, config);
        Assert.IsTrue(eulerA.Config.RescaleBetasZeroSnr);
    }

    [TestMethod]
    public void OptionsGiveTheSameNumbersAsTheSchedulerBuiltByHand()
    {
        var config = LinearConfig();
        var byHand = new DdimScheduler(config) { Eta = 0.5f };
        var byOptions = SchedulerFactory.Create(new DdimSchedulerOptions { Eta = 0.5f }, config);
        byHand.SetTimesteps(10);
        byOptions.SetTimesteps(10);
        CollectionAssert.AreEqual(
            PlainLoop(byHand, DummySampleDeter(), noise: new GaussianNoise(3)),
            PlainLoop(byOptions, DummySampleDeter(), noise: new GaussianNoise(3)));
    }

    [TestMethod]
    public void BadOptionValuesFailNamingTheKey()
    {
        var config = LinearConfig();
        var spacing = Assert.ThrowsExactly<InvalidDataException>(() => SchedulerFactory.Create(new EulerDiscreteSchedulerOptions { TimestepSpacing = "sideways" }, config));
        StringAssert.Contains(spacing.Message, "timestep_spacing");
        var order = Assert.ThrowsExactly<ArgumentException>(() => SchedulerFactory.Create(new DpmSolverMultistepSchedulerOptions { SolverOrder = 3 }, config));
        StringAssert.Contains(order.Message, "solver_order");
        var eta = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => SchedulerFactory.Create(new DdimSchedulerOptions { Eta = -1 }, config));
        Assert.AreEqual("Eta", eta.ParamName);
    }

    private sealed class Holder
    {
        public SchedulerOptions? Scheduler { get; init; }
    }

    [TestMethod]
    public void OptionsSaveAsTheirNameOrAsAnObject()
    {
        var json = new JsonSerializerOptions { DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull };
        // A registered name's defaults are saved as the name: the form pipeline files held before options existed.
        foreach (string name in SchedulerFactory.Names)
        {
            string text = JsonSerializer.Serialize(new Holder { Scheduler = name }, json);
            Assert.AreEqual($"{{\"Scheduler\":\"{name}\"}}", text);
            Assert.AreEqual(SchedulerFactory.GetOptions(name), JsonSerializer.Deserialize<Holder>(text, json)!.Scheduler);
        }
        var eta = new Holder { Scheduler = new DdimSchedulerOptions { Eta = 0.5f, TimestepSpacing = "trailing" } };
        string saved = JsonSerializer.Serialize(eta, json);
        Assert.AreEqual("{\"Scheduler\":{\"Name\":\"ddim\",\"Eta\":0.5,\"TimestepSpacing\":\"trailing\"}}", saved);
        Assert.AreEqual(eta.Scheduler, JsonSerializer.Deserialize<Holder>(saved, json)!.Scheduler);
        var karras = new Holder { Scheduler = new DpmSolverMultistepSchedulerOptions { UseKarrasSigmas = true, SolverType = "heun" } };
        Assert.AreEqual(karras.Scheduler, JsonSerializer.Deserialize<Holder>(JsonSerializer.Serialize(karras, json), json)!.Scheduler);
        Assert.AreEqual(SchedulerFactory.GetOptions("euler-a"), JsonSerializer.Deserialize<Holder>("{\"Scheduler\":\"EulerAncestralDiscreteScheduler\"}", json)!.Scheduler);
        var unknown = Assert.ThrowsExactly<JsonException>(() => JsonSerializer.Deserialize<Holder>("{\"Scheduler\":\"warp-drive\"}", json));
        StringAssert.Contains(unknown.Message, "warp-drive");
        Assert.ThrowsExactly<JsonException>(() => JsonSerializer.Deserialize<Holder>("{\"Scheduler\":{\"Eta\":1}}", json));
    }
}
