#!/usr/bin/env python3
"""Checks of the reference side on a CPU, tiny sizes (python3 -m unittest test_reference, from tools/gpu/reference, with
diffusers/transformers importable, e.g. PYTHONPATH from tools/gpu/setup-local-python.sh):
- our Lion equals lucidrains' lion-pytorch step for step (when lion_pytorch is importable), with weight decay;
- safetensors_lite round-trips every dtype and reads what the wheel/our C# writer wrote;
- flops.py's formula equals PyTorch's own count on diffusers' tiny UNet within 1 %;
- train_ref.py and sample_ref.py print JSON lines with the fields the visit compares.
"""
import io
import json
import os
import subprocess
import sys
import tempfile
import unittest

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402
import flops  # noqa: E402
import safetensors_lite  # noqa: E402

SCHEMA = {"bench", "implementation", "case", "device", "it_per_s", "peak_memory_mib", "memory_kind"}


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


class LionTests(unittest.TestCase):
    def test_matches_lion_pytorch_step_for_step(self):
        try:
            from lion_pytorch import Lion as Reference
        except ImportError:
            self.skipTest("lion_pytorch is not importable")
        torch.manual_seed(0)
        a = [torch.randn(5, 3, requires_grad=True), torch.randn(7, requires_grad=True)]
        b = [p.detach().clone().requires_grad_(True) for p in a]
        ours = common.Lion(a, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
        theirs = Reference(b, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
        for step in range(5):
            g = [torch.randn_like(p) for p in a]
            for p, q, gi in zip(a, b, g):
                p.grad, q.grad = gi.clone(), gi.clone()
            ours.step()
            theirs.step()
            for p, q in zip(a, b):
                self.assertTrue(torch.equal(p, q), f"step {step}")

    def test_update_is_the_published_rule(self):
        p = torch.tensor([1.0, -2.0], requires_grad=True)
        opt = common.Lion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
        p.grad = torch.tensor([0.3, -0.4])
        opt.step()
        # p·(1 − lr·wd) − lr·sign(β1·0 + (1 − β1)·g)
        expected = torch.tensor([1.0, -2.0]) * (1 - 0.1 * 0.5) - 0.1 * torch.tensor([1.0, -1.0])
        self.assertTrue(torch.allclose(p.detach(), expected))
        self.assertTrue(torch.allclose(opt.state[p]["exp_avg"], 0.01 * torch.tensor([0.3, -0.4])))


class SafetensorsLiteTests(unittest.TestCase):
    def test_round_trip_of_every_dtype_with_metadata(self):
        tensors = {n: (torch.randn(3, 2) * 10).to(d) for n, d in
                   [("f32", torch.float32), ("f16", torch.float16), ("bf16", torch.bfloat16), ("f64", torch.float64)]}
        tensors.update(i64=torch.arange(6).reshape(2, 3), u8=torch.arange(4, dtype=torch.uint8), b=torch.tensor([True, False]),
                       empty=torch.zeros(0, 4))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "x.safetensors")
            safetensors_lite.save_file(tensors, path, {"k": "v"})
            back = safetensors_lite.load_file(path)
            self.assertEqual(safetensors_lite.metadata(path), {"k": "v"})
        self.assertEqual(set(back), set(tensors))
        for k in tensors:
            self.assertEqual(back[k].dtype, tensors[k].dtype)
            self.assertTrue(torch.equal(back[k], tensors[k]), k)


class FlopTests(unittest.TestCase):
    def test_formula_matches_sd15_figures(self):
        self.assertEqual(flops.unet_forward_macs(flops.SD15_UNET, 64, 64), 401636720640)
        self.assertEqual(flops.clip_forward_macs(flops.SD15_CLIP), 6649251840)
        self.assertAlmostEqual(flops.train_step_flops(flops.SD15_UNET, flops.SD15_CLIP, 64, 64, False) / 1e12, 4.820, 3)

    def test_formula_matches_pytorch_on_the_tiny_unet(self):
        from diffusers import UNet2DConditionModel
        unet = UNet2DConditionModel(**flops.TINY_UNET).eval()
        measured, _ = flops.measured_forward_flops(unet, torch.randn(1, 4, 8, 8), torch.tensor([10.0]),
                                                   encoder_hidden_states=torch.randn(1, 77, 32))
        self.assertAlmostEqual(2 * flops.unet_forward_macs(flops.TINY_UNET, 8, 8) / measured, 1.0, delta=0.01)


class DriverTests(unittest.TestCase):
    def run_script(self, *args):
        r = subprocess.run([sys.executable, *args], cwd=HERE, capture_output=True, text=True, timeout=1800)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        return json_lines(r.stdout)

    def test_train_ref_prints_the_compared_fields_and_a_profile(self):
        lines = self.run_script("train_ref.py", "--tiny", "--device", "cpu", "--sizes", "16x16", "--steps", "1", "--warmup", "0",
                                "--train-text-encoder", "off", "--ema", "on", "--gradient-checkpointing", "off",
                                "--profile-steps", "1", "--torch-profile")
        self.assertEqual(len(lines), 1)
        r = lines[0]
        self.assertTrue(SCHEMA <= set(r), SCHEMA - set(r))
        self.assertEqual((r["implementation"], r["case"]), ("diffusers", "16x16 unet ema-on gc-off lion fp32"))
        self.assertGreater(r["it_per_s"], 0)
        self.assertEqual(list(r["phases_ms"]), ["forward", "backward", "optimizer", "ema"])
        self.assertTrue(r["torch_profile"]["top"])
        self.assertAlmostEqual(r["step_tflop"], flops.train_step_flops(flops.TINY_UNET, flops.TINY_CLIP, 8, 8, False) / 1e12)

    def test_sample_ref_prints_the_compared_fields(self):
        lines = self.run_script("sample_ref.py", "--tiny", "--device", "cpu", "--sizes", "16x16", "--batches", "1", "--steps", "2")
        self.assertEqual(len(lines), 1)
        r = lines[0]
        self.assertTrue(SCHEMA <= set(r), SCHEMA - set(r))
        self.assertEqual((r["implementation"], r["case"], r["unet_batch"]), ("diffusers", "16x16 b1 cfg7.5 fp32", 2))
        self.assertAlmostEqual(r["it_per_s"] * r["s_per_it"], 1.0, 2)


if __name__ == "__main__":
    unittest.main()
