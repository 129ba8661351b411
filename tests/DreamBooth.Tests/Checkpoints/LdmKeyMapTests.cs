using DreamBooth.Checkpoints;

namespace DreamBooth.Tests.Checkpoints;

public class LdmKeyMapTests
{
    static readonly LdmKeyMap Sd1 = new(LdmBlockLayout.StableDiffusion1);

    // Pairs as they appear in runwayml/stable-diffusion-v1-5 (diffusers folder vs v1-5-pruned.safetensors).
    [Theory]
    [InlineData(SdComponent.UNet, "conv_in.weight", "model.diffusion_model.input_blocks.0.0.weight", false)]
    [InlineData(SdComponent.UNet, "time_embedding.linear_2.bias", "model.diffusion_model.time_embed.2.bias", false)]
    [InlineData(SdComponent.UNet, "down_blocks.0.resnets.0.norm1.weight", "model.diffusion_model.input_blocks.1.0.in_layers.0.weight", false)]
    [InlineData(SdComponent.UNet, "down_blocks.0.attentions.1.proj_in.weight", "model.diffusion_model.input_blocks.2.1.proj_in.weight", false)]
    [InlineData(SdComponent.UNet, "down_blocks.0.downsamplers.0.conv.weight", "model.diffusion_model.input_blocks.3.0.op.weight", false)]
    [InlineData(SdComponent.UNet, "down_blocks.1.resnets.0.conv_shortcut.bias", "model.diffusion_model.input_blocks.4.0.skip_connection.bias", false)]
    [InlineData(SdComponent.UNet, "down_blocks.3.resnets.1.conv2.bias", "model.diffusion_model.input_blocks.11.0.out_layers.3.bias", false)]
    [InlineData(SdComponent.UNet, "down_blocks.2.resnets.1.time_emb_proj.weight", "model.diffusion_model.input_blocks.8.0.emb_layers.1.weight", false)]
    [InlineData(SdComponent.UNet, "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0.weight", "model.diffusion_model.middle_block.1.transformer_blocks.0.attn1.to_out.0.weight", false)]
    [InlineData(SdComponent.UNet, "mid_block.resnets.1.conv1.weight", "model.diffusion_model.middle_block.2.in_layers.2.weight", false)]
    [InlineData(SdComponent.UNet, "up_blocks.0.resnets.2.conv_shortcut.weight", "model.diffusion_model.output_blocks.2.0.skip_connection.weight", false)]
    [InlineData(SdComponent.UNet, "up_blocks.0.upsamplers.0.conv.weight", "model.diffusion_model.output_blocks.2.1.conv.weight", false)]
    [InlineData(SdComponent.UNet, "up_blocks.1.upsamplers.0.conv.weight", "model.diffusion_model.output_blocks.5.2.conv.weight", false)]
    [InlineData(SdComponent.UNet, "up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_k.weight", "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight", false)]
    [InlineData(SdComponent.UNet, "conv_norm_out.bias", "model.diffusion_model.out.0.bias", false)]
    [InlineData(SdComponent.Vae, "decoder.up_blocks.0.resnets.0.conv1.weight", "first_stage_model.decoder.up.3.block.0.conv1.weight", false)]
    [InlineData(SdComponent.Vae, "decoder.up_blocks.3.resnets.2.norm2.bias", "first_stage_model.decoder.up.0.block.2.norm2.bias", false)]
    [InlineData(SdComponent.Vae, "decoder.up_blocks.2.upsamplers.0.conv.weight", "first_stage_model.decoder.up.1.upsample.conv.weight", false)]
    [InlineData(SdComponent.Vae, "encoder.down_blocks.1.resnets.0.conv_shortcut.weight", "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight", false)]
    [InlineData(SdComponent.Vae, "encoder.down_blocks.0.downsamplers.0.conv.bias", "first_stage_model.encoder.down.0.downsample.conv.bias", false)]
    [InlineData(SdComponent.Vae, "encoder.mid_block.attentions.0.to_q.weight", "first_stage_model.encoder.mid.attn_1.q.weight", true)]
    [InlineData(SdComponent.Vae, "decoder.mid_block.attentions.0.to_out.0.weight", "first_stage_model.decoder.mid.attn_1.proj_out.weight", true)]
    [InlineData(SdComponent.Vae, "decoder.mid_block.attentions.0.to_out.0.bias", "first_stage_model.decoder.mid.attn_1.proj_out.bias", false)]
    [InlineData(SdComponent.Vae, "decoder.mid_block.attentions.0.group_norm.weight", "first_stage_model.decoder.mid.attn_1.norm.weight", false)]
    [InlineData(SdComponent.Vae, "encoder.conv_norm_out.weight", "first_stage_model.encoder.norm_out.weight", false)]
    [InlineData(SdComponent.Vae, "post_quant_conv.weight", "first_stage_model.post_quant_conv.weight", false)]
    [InlineData(SdComponent.TextEncoder, "text_model.encoder.layers.11.mlp.fc2.bias", "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.bias", false)]
    public void Known_sd15_pairs_map_both_ways(SdComponent component, string diffusers, string ldm, bool reshape)
    {
        var forward = Sd1.ToLdm(component, diffusers);
        Assert.Equal(ldm, forward.LdmKey);
        Assert.Equal(reshape, forward.Reshape);
        var back = Sd1.ToDiffusers(ldm);
        Assert.NotNull(back);
        Assert.Equal(component, back.Value.Component);
        Assert.Equal(diffusers, back.Value.DiffusersKey);
        Assert.Equal(reshape, back.Value.Reshape);
    }

    [Fact]
    public void Old_text_encoder_layout_and_ema_names()
    {
        Assert.Equal("text_model.final_layer_norm.weight", Sd1.ToDiffusers("cond_stage_model.transformer.final_layer_norm.weight")!.Value.DiffusersKey);
        Assert.Equal("model_ema.diffusion_modelinput_blocks00weight", LdmKeyMap.EmaKey("model.diffusion_model.input_blocks.0.0.weight"));
        Assert.Null(Sd1.ToDiffusers("betas"));
        Assert.True(LdmKeyMap.IsIgnorable("alphas_cumprod", loadingEma: false));
        Assert.True(LdmKeyMap.IsIgnorable("model_ema.diffusion_modelout2bias", loadingEma: false));
        Assert.False(LdmKeyMap.IsIgnorable("model_ema.diffusion_modelout2bias", loadingEma: true));
        Assert.Throws<DreamBoothException>(() => Sd1.ToLdm(SdComponent.UNet, "class_embedding.weight"));
    }

    [Fact]
    public void Tiny_layout_maps_by_its_own_block_counts()
    {
        var tiny = new LdmKeyMap(new LdmBlockLayout([true, false], [false, true], 1, true, 2, 1));
        Assert.Equal("model.diffusion_model.input_blocks.2.0.op.weight", tiny.ToLdm(SdComponent.UNet, "down_blocks.0.downsamplers.0.conv.weight").LdmKey);
        Assert.Equal("model.diffusion_model.output_blocks.1.1.conv.weight", tiny.ToLdm(SdComponent.UNet, "up_blocks.0.upsamplers.0.conv.weight").LdmKey);
        Assert.Equal("model.diffusion_model.output_blocks.3.1.proj_out.weight", tiny.ToLdm(SdComponent.UNet, "up_blocks.1.attentions.1.proj_out.weight").LdmKey);
        Assert.Equal("first_stage_model.decoder.up.1.block.1.conv2.weight", tiny.ToLdm(SdComponent.Vae, "decoder.up_blocks.0.resnets.1.conv2.weight").LdmKey);
    }
}
