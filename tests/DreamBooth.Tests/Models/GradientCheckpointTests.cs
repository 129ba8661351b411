using DreamBooth.Models;
using TorchSharp;
using static DreamBooth.Tests.Models.ModelTestSupport;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Models;

[Collection(SerialModelTests.Name)]
public class GradientCheckpointTests
{
    [Fact]
    public void Recomputes_in_backward_and_matches_plain_autograd()
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        using var linear = nn.Linear(5, 4);
        var x = randn(3, 5).requires_grad_(true);
        var y = randn(3, 4).requires_grad_(true);
        int calls = 0;
        Tensor[] Block(Tensor[] inputs)
        {
            calls++;
            var h = linear.forward(inputs[0]).tanh();
            return [h * inputs[1], h.sum(1)];
        }

        var plain = Block([x, y]);
        (plain[0].square().sum() + plain[1].sum()).backward();
        var gx = x.grad!.clone(); var gy = y.grad!.clone(); var gw = linear.weight!.grad!.clone();
        x.grad!.zero_(); y.grad!.zero_(); linear.zero_grad();

        calls = 0;
        var outputs = GradientCheckpoint.Run(Block, [x, y], linear.parameters());
        Assert.Equal(1, calls);
        Assert.True(outputs[0].requires_grad);
        Assert.True(outputs[0].allclose(plain[0]));
        (outputs[0].square().sum() + outputs[1].sum()).backward();
        Assert.Equal(2, calls); // recomputed once in backward
        Assert.True(x.grad!.allclose(gx, rtol: 1e-6, atol: 1e-7));
        Assert.True(y.grad!.allclose(gy, rtol: 1e-6, atol: 1e-7));
        Assert.True(linear.weight!.grad!.allclose(gw, rtol: 1e-6, atol: 1e-7));
    }

    [Fact]
    public void Leaves_no_live_tensors_and_refuses_a_tensor_returned_twice()
    {
        manual_seed(4);
        using var linear = nn.Linear(4, 4);
        var x = randn(2, 4).requires_grad_(true);
        void Step(Func<Tensor[], Tensor[]> f)
        {
            using var scope = NewDisposeScope();
            GradientCheckpoint.Run(f, [x], linear.parameters()).Select(t => t.sum()).Aggregate((a, b) => a + b).backward();
        }
        Step(a => [linear.forward(a[0]), linear.forward(a[0]).relu()]); // creates the .grad tensors
        long before = SettledTensorCount();
        Step(a => [linear.forward(a[0]), linear.forward(a[0]).relu()]);
        Assert.Equal(before, Tensor.TotalCount);
        Assert.Throws<InvalidOperationException>(() => Step(a => { var h = linear.forward(a[0]); return [h, h]; }));
    }
}
