using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Models;

/// <summary>
/// Activation (gradient) checkpointing for TorchSharp, which has no <c>torch.utils.checkpoint</c>: the wrapped
/// function runs under no_grad in the forward pass, so none of its intermediate activations are kept; only its
/// inputs are saved. In the backward pass it runs again with grad enabled on detached copies of the inputs and
/// back-propagates the incoming output gradients through that fresh graph (a re-entrant backward, as PyTorch's
/// <c>use_reentrant=True</c> checkpoint): parameter gradients accumulate into <c>.grad</c> there, input gradients are
/// returned to the outer graph. Built on TorchSharp's custom <c>torch.autograd.MultiTensorFunction</c>.
/// The function must be deterministic (no dropout with p &gt; 0: there is no RNG-state replay).
/// </summary>
public static class GradientCheckpoint
{
    /// <summary>Runs <paramref name="function"/> on <paramref name="inputs"/> with checkpointing.</summary>
    /// <param name="function">the block to run; called twice (forward, then again in backward).</param>
    /// <param name="inputs">tensor inputs (all non-null).</param>
    /// <param name="parameters">the parameters <paramref name="function"/> uses: when none of the inputs requires grad but
    /// some of these do, a zero-size leaf that requires grad is added so the node is still part of the graph.</param>
    public static Tensor[] Run(Func<Tensor[], Tensor[]> function, Tensor[] inputs, IEnumerable<Tensor>? parameters = null)
    {
        var args = new List<object> { new Payload(function, inputs.Length) };
        args.AddRange(inputs);
        if (is_grad_enabled() && !inputs.Any(t => t.requires_grad) && parameters is not null && parameters.Any(p => p.requires_grad))
            args.Add(empty(0, dtype: inputs[0].dtype, device: inputs[0].device, requires_grad: true));
        return CheckpointFunction.apply(args.ToArray()).ToArray();
    }

    sealed record Payload(Func<Tensor[], Tensor[]> Function, int InputCount);

    sealed class CheckpointFunction : autograd.MultiTensorFunction<CheckpointFunction>
    {
        public override string Name => "GradientCheckpoint";

        public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var payload = (Payload)vars[0];
            var tensors = vars.Skip(1).Cast<Tensor>().ToList();
            ctx.save_data("payload", payload);
            ctx.save_data("count", tensors.Count);
            ctx.save_for_backward(tensors);
            // Unused outputs arrive as undefined gradients (they are skipped below). TorchSharp's zero-filling of them
            // reads output templates that live in the caller's dispose scope, which may be gone by backward time.
            ctx.set_materialize_grads(false);
            // apply() already runs this under no_grad: no activations are kept.
            var outputs = payload.Function(tensors.Take(payload.InputCount).ToArray());
            // TorchSharp 0.107 never releases one of the wrappers of a tensor returned twice (measured: one live
            // tensor per call), so that is refused rather than leaked.
            var seen = new HashSet<IntPtr>();
            foreach (var output in outputs)
                if (!seen.Add(output.Handle))
                    throw new InvalidOperationException("a checkpointed function must not return the same tensor twice");
            return outputs.ToList();
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> grad_outputs)
        {
            var payload = (Payload)ctx.get_data("payload");
            var saved = ctx.get_saved_variables();
            var grads = new List<Tensor?> { null }; // the payload argument
            using (var _ = enable_grad())
            using (var scope = NewDisposeScope())
            {
                var detached = saved.Take(payload.InputCount)
                    .Select(t => t.detach().requires_grad_(t.requires_grad)).ToArray();
                var outputs = payload.Function(detached);
                // one root per distinct tensor (a tensor returned twice gets the sum of its gradients)
                var roots = new List<Tensor>();
                var rootGrads = new List<Tensor>();
                var index = new Dictionary<IntPtr, int>();
                for (int i = 0; i < outputs.Length; i++)
                {
                    if (!outputs[i].requires_grad || grad_outputs[i] is null || grad_outputs[i].IsInvalid) continue;
                    if (index.TryGetValue(outputs[i].Handle, out int k)) { rootGrads[k] = rootGrads[k] + grad_outputs[i]; continue; }
                    index[outputs[i].Handle] = roots.Count;
                    roots.Add(outputs[i]);
                    rootGrads.Add(grad_outputs[i]);
                }
                if (roots.Count > 0) autograd.backward(roots, rootGrads);
                foreach (var d in detached)
                {
                    var g = d.requires_grad ? d.grad : null;
                    // handed to native autograd after this scope closes: keep it alive in the scope around the caller's
                    // backward() (on CPU autograd runs on the calling thread), or, on an engine thread, until the GC finalizes it.
                    grads.Add(g?.MoveToOuterDisposeScope());
                }
            }
            for (int i = payload.InputCount; i < saved.Count; i++) grads.Add(null); // the zero-size anchor
            return grads!;
        }
    }
}
