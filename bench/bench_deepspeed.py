"""DeepSpeed ZeRO-2 vs megatron-core's distributed optimizer: step time at the same config, and
the memory of ZeRO-3 with CPU offload at the ~1.2B size of examples/configs/gpt_1b.yaml.

Step time: two ranks (gloo on CPU, NCCL on GPU) build the same GPTModel twice, once wrapped by
megatron-core DDP with its distributed optimizer (the default backend with
--use-distributed-optimizer), once by a DeepSpeed ZeRO-2 engine (examples/deepspeed/zero2.json),
and time the trainer's own step (`training.step.forward_backward` + the backend's optimizer
step) on the same synthetic batches, alternating blocks of steps between the arms so machine
load drifts hit both alike. Reported: median step time per arm and the ratio.

Memory: model states only (activations depend on micro-batch, sequence and recomputation and are
the same on both backends), from the byte counts per parameter below; DeepSpeed's own estimator
is printed beside it as a cross-check.

    PYTHONPATH=. python bench/bench_deepspeed.py         # CPU-sized model (from the repository root)
    PYTHONPATH=. python bench/bench_deepspeed.py --hidden-size 1024 --num-layers 8 --seq-length 512
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.multiprocessing as mp

GIB = 2.0**30


def zero3_offload_model_states(num_params: int, largest_layer_params: int, *, gpus_per_node: int,
                               num_nodes: int, built_whole: bool = True,
                               buffer_factor: float = 1.5) -> dict[str, float]:
    """Bytes of model states per GPU and per node for ZeRO-3 with parameters and optimizer state
    offloaded to the CPU, bf16 training with an fp32 AdamW.

    Per parameter, the full training state is 18 bytes: bf16 weight (2) + fp32 gradient (4, the
    offloaded optimizer's copy) + fp32 master weight (4) + Adam moments (4 + 4). With ZeRO-3 each
    of the D = gpus_per_node x num_nodes ranks owns 1/D of it, and offload moves all of it to the
    host, so one node's CPU memory holds 18 B x P / num_nodes, times DeepSpeed's allowance of 1.5
    for its pinned transfer buffers and fragmentation. When the model is built whole on every GPU
    before the engine partitions it (this toolkit: no `deepspeed.zero.Init`), every GPU's
    process first holds a full bf16 copy that DeepSpeed moves to pinned host buffers, so a node's
    host needs at least 4 B x P per GPU as well (DeepSpeed's estimator counts it the same way),
    and each GPU peaks at 2 B x P while the model is built.
    In steady state a GPU holds only the parameters gathered for the layer being computed and
    their gradients before they are reduce-scattered and offloaded: 2 + 2 bytes per parameter of
    the largest layer (for a GPT, the embedding or output layer: vocabulary x hidden).
    """
    gpu_steady = 4 * largest_layer_params
    per_param_host = 18 / num_nodes
    if built_whole:
        per_param_host = max(per_param_host, 4 * gpus_per_node)
    return {
        "gpu_steady_bytes": float(gpu_steady),
        "gpu_build_peak_bytes": float(2 * num_params) if built_whole else float(gpu_steady),
        "cpu_per_node_bytes": num_params * per_param_host * buffer_factor,
    }


def _gib(estimate: dict[str, float]) -> dict[str, float]:
    return {key.replace("_bytes", "_gib"): round(value / GIB, 3) for key, value in estimate.items()}


def memory_estimate(gpus_per_node: int, num_nodes: int) -> dict:
    import dataclasses

    import yaml

    from megatron_prealign.model import ModelConfig

    path = os.path.join(os.path.dirname(__file__), "..", "examples", "configs", "gpt_1b.yaml")
    keys = {f.name for f in dataclasses.fields(ModelConfig)}
    values = {k: v for k, v in yaml.safe_load(open(path)).items() if k in keys}
    cfg = ModelConfig(**{**values, "vocab_size": 32000})  # a Llama-2-style 32k tokenizer
    h, ffn = cfg.hidden_size, cfg.ffn_hidden_size
    kv = (cfg.num_query_groups or cfg.num_attention_heads) * (h // cfg.num_attention_heads)
    layer = h * (h + 2 * kv) + h * h + 3 * h * ffn + 2 * h
    largest = max(layer, cfg.padded_vocab_size(1) * h)
    ours = zero3_offload_model_states(cfg.num_parameters(), largest, gpus_per_node=gpus_per_node,
                                      num_nodes=num_nodes)
    built_in_parts = zero3_offload_model_states(cfg.num_parameters(), largest, gpus_per_node=gpus_per_node,
                                                num_nodes=num_nodes, built_whole=False)
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    ds_cpu, ds_gpu, _ = estimate_zero3_model_states_mem_needs(
        cfg.num_parameters(), largest, num_gpus_per_node=gpus_per_node, num_nodes=num_nodes, cpu_offload=True,
        cpu_offload_params=True, zero_init=False)
    return {"params": cfg.num_parameters(), "largest_layer_params": largest, "gpus_per_node": gpus_per_node,
            "num_nodes": num_nodes, **_gib(ours),
            "deepspeed_estimator_gpu_gib": round(ds_gpu / GIB, 3),
            "deepspeed_estimator_cpu_per_node_gib": round(ds_cpu / GIB, 3),
            "cpu_per_node_gib_if_partitioned_while_built": round(built_in_parts["cpu_per_node_bytes"] / GIB, 3)}


def _batches(args, dp_rank: int, dp_size: int, step: int) -> list[dict]:
    """This rank's microbatches of one global batch; ~20% of the loss mask dropped, as switched
    spans do."""
    g = torch.Generator().manual_seed(1000 * step + dp_rank)
    out = []
    for _ in range(args.global_batch_size // (args.micro_batch_size * dp_size)):
        tokens = torch.randint(0, args.vocab_size, (args.micro_batch_size, args.seq_length + 1), generator=g)
        mask = (torch.rand(args.micro_batch_size, args.seq_length, generator=g) > 0.2).float()
        out.append({"tokens": tokens[:, :-1], "labels": tokens[:, 1:], "loss_mask": mask,
                    "position_ids": torch.arange(args.seq_length).expand(args.micro_batch_size, -1)})
    return out


def _rank(rank: int, world_size: int, port: int, args, results) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(args.threads)
    from megatron_prealign.log import quiet_optional_accelerator_warnings

    quiet_optional_accelerator_warnings()
    from megatron_prealign.deepspeed.config import read_deepspeed_json, stage_deepspeed_json
    from megatron_prealign.deepspeed.engine import DeepSpeedBackend
    from megatron_prealign.distributed import init_distributed, set_seeds
    from megatron_prealign.model import ModelConfig, build_model
    from megatron_prealign.optim import OptimConfig
    from megatron_prealign.parallel import ParallelConfig
    from megatron_prealign.platform import activate_cpu_compat
    from megatron_prealign.optim import MegatronBackend
    from megatron_prealign.training.ddp import wrap_ddp
    from megatron_prealign.training.step import forward_backward

    activate_cpu_compat()
    parallel = ParallelConfig()
    pgs = init_distributed(parallel, seed=1234)
    dp_rank, dp_size = pgs.dp.rank(), pgs.dp.size()
    model_cfg = ModelConfig(num_layers=args.num_layers, hidden_size=args.hidden_size,
                            num_attention_heads=args.num_attention_heads, seq_length=args.seq_length,
                            vocab_size=args.vocab_size, bf16=args.bf16)
    optim = OptimConfig(lr=3e-4, min_lr=3e-5, lr_warmup_iters=0, clip_grad=1.0)
    steps = args.blocks * args.steps_per_block + args.warmup
    num_micro = args.global_batch_size // (args.micro_batch_size * dp_size)

    set_seeds(1234)  # both arms start from the same weights
    ddp = wrap_ddp(build_model(model_cfg, parallel, pgs), use_distributed_optimizer=True, pg_collection=pgs)
    megatron = MegatronBackend(ddp, OptimConfig(**{**optim.__dict__, "use_distributed_optimizer": True}),
                               train_iters=steps, samples_per_step=args.global_batch_size, pg_collection=pgs)
    path = os.path.join(os.path.dirname(__file__), "..", "examples", "deepspeed", "zero2.json")
    settings = stage_deepspeed_json(read_deepspeed_json(path), path, micro_batch_size=args.micro_batch_size,
                                    num_microbatches=num_micro, data_parallel_size=dp_size, clip_grad=optim.clip_grad,
                                    bf16=args.bf16, fp16=False, check_against_flags=True)
    set_seeds(1234)
    zero2 = DeepSpeedBackend(build_model(model_cfg, parallel, pgs), optim, settings, train_iters=steps,
                             samples_per_step=args.global_batch_size, pg_collection=pgs)
    arms = {"megatron_distributed_optimizer": megatron, "deepspeed_zero2": zero2}
    times: dict[str, list[float]] = {name: [] for name in arms}
    losses: dict[str, list[float]] = {name: [] for name in arms}
    step_of = {name: 0 for name in arms}

    def one_step(name):
        backend = arms[name]
        batches = _batches(args, dp_rank, dp_size, step_of[name])
        step_of[name] += 1
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        backend.zero_grad()
        result = forward_backward(backend.model, batches, num_microbatches=num_micro, seq_length=args.seq_length,
                                  micro_batch_size=args.micro_batch_size, pg_collection=pgs)
        backend.step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        losses[name].append(result.lm_loss)
        return time.perf_counter() - start

    for name in arms:
        for _ in range(args.warmup):
            one_step(name)
    for _ in range(args.blocks):
        for name in arms:
            times[name].extend(one_step(name) for _ in range(args.steps_per_block))
    if rank == 0:
        results.update({name: {"median_step_s": statistics.median(t), "steps": len(t),
                               "last_loss": losses[name][-1]} for name, t in times.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--num-attention-heads", type=int, default=8)
    parser.add_argument("--seq-length", type=int, default=256)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--micro-batch-size", type=int, default=2)
    parser.add_argument("--global-batch-size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--steps-per-block", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--bf16", action="store_true", help="bf16 (needs CUDA)")
    parser.add_argument("--gpus-per-node", type=int, default=8, help="of the memory estimate")
    parser.add_argument("--num-nodes", type=int, default=1, help="of the memory estimate")
    args = parser.parse_args()

    from megatron_prealign.distributed import free_port

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank, args=(2, free_port(), args, results), nprocs=2, join=True)
        timing = dict(results)
    ratio = timing["deepspeed_zero2"]["median_step_s"] / timing["megatron_distributed_optimizer"]["median_step_s"]
    print(json.dumps({"step_time": timing, "zero2_over_distributed_optimizer": ratio,
                      "zero3_offload_memory_gpt_1b": memory_estimate(args.gpus_per_node, args.num_nodes)},
                     indent=2))


if __name__ == "__main__":
    main()
