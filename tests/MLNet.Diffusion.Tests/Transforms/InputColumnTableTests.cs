using System;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion.Tests.Transforms;

/// <summary>
/// One input-column table per stage serves the estimator's check (<see cref="SchemaShape"/>: kinds only), the transformer's
/// (<see cref="DataViewSchema"/>: kinds and vector sizes) and the cursor's list of columns to read.
/// </summary>
[TestClass]
public sealed class InputColumnTableTests
{
    private static InputColumnTable Table(string? seedColumn) => new InputColumnTable()
        .Add("Prompt", InputColumnKind.Text, "String")
        .Add(seedColumn, InputColumnKind.Integer, ColumnChecks.SeedDescription)
        .Add("Noise", InputColumnKind.FloatVector, "Vector<Single> of size 16", "Vector<Single> noise", size: 16, sizeExpected: "Vector<Single> of size 16 (1×4×4)")
        .Add("Embeddings", InputColumnKind.FloatVector, "Vector<Single> of [2, S, 3]", sizeMultiple: 6);

    private static DataViewSchema Schema(DataViewType seed, int noise, int embeddings)
    {
        var b = new DataViewSchema.Builder();
        b.AddColumn("Prompt", TextDataViewType.Instance);
        b.AddColumn("Seed", seed);
        b.AddColumn("Noise", new VectorDataViewType(NumberDataViewType.Single, noise));
        b.AddColumn("Embeddings", new VectorDataViewType(NumberDataViewType.Single, embeddings));
        return b.ToSchema();
    }

    [TestMethod]
    public void AnOptionalColumnThatIsNotSetIsNeitherReadNorChecked()
    {
        CollectionAssert.AreEqual(new[] { "Prompt", "Seed", "Noise", "Embeddings" }, Table("Seed").Names as System.Collections.ICollection);
        CollectionAssert.AreEqual(new[] { "Prompt", "Noise", "Embeddings" }, Table(null).Names as System.Collections.ICollection);
        Table(null).Validate(Schema(TextDataViewType.Instance, 16, 12)); // the mistyped seed column is not the stage's
    }

    [TestMethod]
    public void TheTransformerChecksKindsAndSizesNamingTheColumn()
    {
        Table("Seed").Validate(Schema(NumberDataViewType.Int64, 16, 12));

        var seed = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Table("Seed").Validate(Schema(TextDataViewType.Instance, 16, 12)));
        StringAssert.Contains(seed.Message, "Schema mismatch for input column 'Seed': expected an integer seed");
        var size = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Table("Seed").Validate(Schema(NumberDataViewType.Int32, 15, 12)));
        StringAssert.Contains(size.Message, "'Noise': expected Vector<Single> of size 16 (1×4×4), got Vector<Single> of size 15");
        var multiple = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Table("Seed").Validate(Schema(NumberDataViewType.Int32, 16, 10)));
        StringAssert.Contains(multiple.Message, "'Embeddings': expected Vector<Single> of [2, S, 3], got Vector<Single> of size 10");
        var missing = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Table("Other").Validate(Schema(NumberDataViewType.Int32, 16, 12)));
        StringAssert.Contains(missing.Message, "Input column 'Other'");
    }

    [TestMethod]
    public void TheEstimatorChecksKindsWithItsOwnWording()
    {
        var ml = new MLContext(1);
        Table("Seed").Validate(SchemaShapes.FromSchema(ml, Schema(NumberDataViewType.Int64, 15, 10))); // a SchemaShape has no sizes

        var b = new DataViewSchema.Builder();
        b.AddColumn("Prompt", TextDataViewType.Instance);
        b.AddColumn("Noise", TextDataViewType.Instance);
        var kind = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Table(null).Validate(SchemaShapes.FromSchema(ml, b.ToSchema())));
        StringAssert.Contains(kind.Message, "Schema mismatch for input column 'Noise': expected Vector<Single> noise, got String");
    }
}
