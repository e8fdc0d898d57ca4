using MLNet.Diffusion.Lora;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace MLNet.Diffusion.Tests.Lora;

[TestClass]
public sealed class LoraKeyNamesTests
{
    [TestMethod]
    [DataRow("down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q")]
    [DataRow("up_blocks_1_attentions_2_transformer_blocks_0_attn2_to_out_0", "up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_out.0")]
    [DataRow("mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj", "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj")]
    [DataRow("up_blocks_0_resnets_2_conv_shortcut", "up_blocks.0.resnets.2.conv_shortcut")]
    [DataRow("mid_block_resnets_0_time_emb_proj", "mid_block.resnets.0.time_emb_proj")]
    [DataRow("down_blocks_0_downsamplers_0_conv", "down_blocks.0.downsamplers.0.conv")]
    [DataRow("down_blocks_1_attentions_0_proj_in", "down_blocks.1.attentions.0.proj_in")]
    [DataRow("time_embedding_linear_1", "time_embedding.linear_1")]
    [DataRow("text_model_encoder_layers_11_self_attn_out_proj", "text_model.encoder.layers.11.self_attn.out_proj")]
    [DataRow("text_model_encoder_layers_0_mlp_fc1", "text_model.encoder.layers.0.mlp.fc1")]
    public void RebuildsDiffusersModulePathsFromKohyaNames(string flat, string expected) =>
        Assert.AreEqual(expected, LoraKeyNames.ToModulePath(flat));

    // Expected paths: diffusers v0.36 (main, 2026-12) _maybe_map_sgm_blocks_to_diffusers(layers_per_block=2) followed by
    // _convert_unet_lora_key (loaders/lora_conversion_utils.py), run on these keys; the attention-processor suffix that
    // _convert_unet_lora_key appends (attn1.processor.to_q_lora) names module attn1.to_q.
    [TestMethod]
    [DataRow("input_blocks_4_1_transformer_blocks_0_attn1_to_q", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q")]
    [DataRow("input_blocks_1_0_in_layers_2", "down_blocks.0.resnets.0.conv1")]
    [DataRow("input_blocks_3_0_op", "down_blocks.0.downsamplers.0.conv")]
    [DataRow("input_blocks_7_1_proj_in", "down_blocks.2.attentions.0.proj_in")]
    [DataRow("input_blocks_5_0_emb_layers_1", "down_blocks.1.resnets.1.time_emb_proj")]
    [DataRow("input_blocks_4_0_skip_connection", "down_blocks.1.resnets.0.conv_shortcut")]
    [DataRow("middle_block_0_emb_layers_1", "mid_block.resnets.0.time_emb_proj")]
    [DataRow("middle_block_1_transformer_blocks_0_attn2_to_k", "mid_block.attentions.0.transformer_blocks.0.attn2.to_k")]
    [DataRow("middle_block_2_out_layers_3", "mid_block.resnets.1.conv2")]
    [DataRow("output_blocks_8_0_in_layers_2", "up_blocks.2.resnets.2.conv1")]
    [DataRow("output_blocks_2_2_conv", "up_blocks.0.upsamplers.0.conv")]
    [DataRow("output_blocks_3_1_transformer_blocks_1_ff_net_0_proj", "up_blocks.1.attentions.0.transformer_blocks.1.ff.net.0.proj")]
    [DataRow("output_blocks_5_0_skip_connection", "up_blocks.1.resnets.2.conv_shortcut")]
    [DataRow("time_embed_0", "time_embedding.linear_1")]
    [DataRow("label_emb_0_2", "add_embedding.linear_2")]
    [DataRow("input_blocks_0_0", "conv_in")]
    [DataRow("out_2", "conv_out")]
    public void MapsSdxlOriginalBlockNamesAsDiffusersDoes(string flat, string expected) =>
        Assert.AreEqual(expected, LoraKeyNames.ToModulePath(flat));

    [TestMethod]
    public void MapsAnUpsamplerAtIndexOneOfABlockWithoutAttention() =>
        // SD 1.x output_blocks.2 = [ResBlock, Upsample] (up_blocks.0 has no attention); diffusers' index table would say attentions.
        Assert.AreEqual("up_blocks.0.upsamplers.0.conv", LoraKeyNames.ToModulePath("output_blocks_2_1_conv"));

    [TestMethod]
    public void RefusesMiddleBlockIndicesTheUnetLacks() =>
        Assert.ThrowsExactly<System.FormatException>(() => LoraKeyNames.ToModulePath("middle_block_3_proj_in"));
}
