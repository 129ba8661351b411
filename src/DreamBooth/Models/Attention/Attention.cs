using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.Attention;

/// <summary>
/// diffusers <c>Attention</c> with the SDPA processor: multi-head (self- or cross-) attention over
/// [B, N, C] tokens, or over the pixels of a [B, C, H, W] map (the VAE mid-block form: optional
/// <c>group_norm</c> first, residual connection, rescale). Keys: to_q, to_k, to_v, to_out.0, group_norm.
/// </summary>
public sealed class Attention : nn.Module<Tensor, Tensor?, Tensor>
{
    readonly Linear to_q;
    readonly Linear to_k;
    readonly Linear to_v;
    readonly ModuleList<nn.Module<Tensor, Tensor>> to_out;
    readonly GroupNorm? group_norm;

    readonly int heads;
    readonly int dimHead;
    readonly bool upcastAttention;
    readonly bool residualConnection;
    readonly double rescaleOutputFactor;

    /// <param name="queryDim">channels of the query tokens.</param>
    /// <param name="crossAttentionDim">channels of the key/value tokens; null = self-attention.</param>
    /// <param name="heads">number of heads.</param>
    /// <param name="dimHead">channels per head.</param>
    /// <param name="dropout">dropout after the output projection.</param>
    /// <param name="bias">bias on to_q/to_k/to_v.</param>
    /// <param name="upcastAttention">compute attention in fp32 when the inputs are half precision.</param>
    /// <param name="normNumGroups">when set, a GroupNorm over the channels before attention (VAE form).</param>
    /// <param name="normEps">eps of that GroupNorm.</param>
    /// <param name="residualConnection">add the input to the output.</param>
    /// <param name="rescaleOutputFactor">divide the output by this.</param>
    public Attention(long queryDim, long? crossAttentionDim = null, int heads = 8, int dimHead = 64, double dropout = 0.0,
        bool bias = false, bool upcastAttention = false, int? normNumGroups = null, double normEps = 1e-5,
        bool residualConnection = false, double rescaleOutputFactor = 1.0) : base(nameof(Attention))
    {
        this.heads = heads;
        this.dimHead = dimHead;
        this.upcastAttention = upcastAttention;
        this.residualConnection = residualConnection;
        this.rescaleOutputFactor = rescaleOutputFactor;
        long innerDim = (long)heads * dimHead;
        long kvDim = crossAttentionDim ?? queryDim;
        if (normNumGroups is int groups) group_norm = Layers.GroupNorm(groups, queryDim, normEps);
        to_q = Layers.Linear(queryDim, innerDim, hasBias: bias);
        to_k = Layers.Linear(kvDim, innerDim, hasBias: bias);
        to_v = Layers.Linear(kvDim, innerDim, hasBias: bias);
        to_out = nn.ModuleList<nn.Module<Tensor, Tensor>>(Layers.Linear(innerDim, queryDim, hasBias: true), nn.Dropout(dropout));
        RegisterComponents();
    }

    public int Heads => heads;

    /// <param name="hidden_states">[B, N, C] tokens or a [B, C, H, W] map.</param>
    /// <param name="encoder_hidden_states">[B, L, cross_dim] for cross-attention; null for self-attention.</param>
    public override Tensor forward(Tensor hidden_states, Tensor? encoder_hidden_states)
    {
        using var scope = NewDisposeScope();
        var residual = hidden_states;
        var inputNdim = hidden_states.dim();
        long b = hidden_states.shape[0], c = 0, h = 0, w = 0;
        if (inputNdim == 4)
        {
            c = hidden_states.shape[1]; h = hidden_states.shape[2]; w = hidden_states.shape[3];
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2);
        }
        if (group_norm is not null)
            hidden_states = group_norm.forward(hidden_states.transpose(1, 2)).transpose(1, 2);

        var query = to_q.forward(hidden_states);
        var context = encoder_hidden_states ?? hidden_states;
        var key = to_k.forward(context);
        var value = to_v.forward(context);

        query = query.view(b, -1, heads, dimHead).transpose(1, 2);
        key = key.view(b, -1, heads, dimHead).transpose(1, 2);
        value = value.view(b, -1, heads, dimHead).transpose(1, 2);

        var dtype = query.dtype;
        Tensor attn;
        if (upcastAttention && dtype != ScalarType.Float32 && dtype != ScalarType.Float64)
            attn = nn.functional.scaled_dot_product_attention(query.to_type(ScalarType.Float32), key.to_type(ScalarType.Float32),
                value.to_type(ScalarType.Float32)).to_type(dtype);
        else
            attn = nn.functional.scaled_dot_product_attention(query, key, value);

        attn = attn.transpose(1, 2).reshape(b, -1, (long)heads * dimHead).to_type(dtype);
        attn = to_out[0].forward(attn);
        attn = to_out[1].forward(attn);

        if (inputNdim == 4) attn = attn.transpose(-1, -2).reshape(b, c, h, w);
        if (residualConnection) attn = attn + residual;
        if (rescaleOutputFactor != 1.0) attn = attn / rescaleOutputFactor;
        return attn.MoveToOuterDisposeScope();
    }
}
