"""Equivariant encryption on sklearn digits: exactness, inference overhead (plain vs
encrypted, interleaved, median of 25), and the success rate of the activation-statistics
attack that tries to recover the secret permutations.

Writes benchmarks/results/weights_encryption.{json,md,png}.

    .venv/bin/python benchmarks/weights_encryption.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch

from _common import pyplot
from equikit.weights import (
    MLP,
    Transformer,
    activation_statistics_attack,
    collect_activations,
    encrypt,
    generate_key,
    mlp_spec,
    transformer_spec,
)
from weights_common import (
    RESULTS,
    Progress,
    TrainConfig,
    environment,
    evaluate,
    interleaved,
    load_digits,
    train,
    write_results,
)

NAME = "weights_encryption"


def overhead(name, net, spec, x, repeats) -> dict:
    """Plain forward vs the whole encrypted round trip (client encrypts, server runs the
    encrypted model, client decrypts)."""
    t0 = time.perf_counter()
    key = generate_key(spec, generator=0)
    t_key = time.perf_counter() - t0
    t0 = time.perf_counter()
    enc = encrypt(net, key)
    t_enc = time.perf_counter() - t0
    with torch.no_grad():
        err = float((key.decrypt_output(enc(key.encrypt_input(x))) - net(x)).abs().max() / net(x).abs().max())

        def plain():
            return net(x)

        def encrypted():
            return key.decrypt_output(enc(key.encrypt_input(x)))

        def server_only():
            return enc(x)

        t = interleaved({"plain": plain, "encrypted_round_trip": encrypted, "encrypted_server_only": server_only},
                        repeats=repeats)
    med = {k: v["median_s"] for k, v in t.items()}
    return {"model": name, "input_shape": list(x.shape), "key_seconds": t_key, "encrypt_seconds": t_enc,
            "rel_error": err, "dtype": str(x.dtype), "median_s": med,
            "overhead_round_trip": med["encrypted_round_trip"] / med["plain"] - 1,
            "overhead_server_only": med["encrypted_server_only"] / med["plain"] - 1, "times_s": {
                k: v["times_s"] for k, v in t.items()}}


def attack(width, data, n_queries, n_keys, config, log) -> dict:
    torch.manual_seed(3000 + width)
    net = train(MLP(64, (width, width), 10), data.x_train, data.y_train, 0, config)
    spec = mlp_spec(net, io=True)
    public = collect_activations(net, spec, data.x_train)  # attacker: public model, public data
    rates = {m: {k: [] for k in ("input", "h0", "h1")} for m in n_queries}
    for seed in range(n_keys):
        key = generate_key(spec, generator=100 + seed)
        enc = encrypt(net, key)
        for m in n_queries:
            queries = key.encrypt_input(data.x_test[:m])  # what the server sees
            seen = collect_activations(enc, spec, queries)
            for g in ("h0", "h1"):
                guess = activation_statistics_attack(public[g], seen[g])
                rates[m][g].append(float((guess == key.perms[g]).double().mean()))
            # input pixels: only those that vary in the public data can be told apart
            varying = data.x_train.std(0) > 0
            guess = activation_statistics_attack(data.x_train, queries)
            rates[m]["input"].append(float((guess == key.perms["input"])[varying].double().mean()))
    log(f"attack width {width} done")
    return {"width": width, "test_accuracy": evaluate(net, data.x_test, data.y_test)["accuracy"],
            "success": {m: {g: sum(v) / len(v) for g, v in r.items()} for m, r in rates.items()},
            "chance": {"input": 1 / 64, "h0": 1 / width, "h1": 1 / width},
            "varying_pixels": int((data.x_train.std(0) > 0).sum())}


def table(results: dict) -> str:
    env = results["environment"]
    lines = [
        "# Equivariant encryption on sklearn digits",
        "",
        f"Command: `.venv/bin/python benchmarks/weights_encryption.py`; threads {env['threads']}, load average "
        f"{tuple(round(v, 2) for v in env['loadavg'])}, {env['cpu']}.",
        "",
        "## Exactness and overhead (interleaved, median of "
        f"{results['config']['repeats']} calls after warm-up)",
        "",
        "| model | dtype | input | max rel error (decrypted vs plain) | plain | encrypted (server only) | "
        "encrypted round trip | overhead round trip | key gen | encrypt() |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["overhead"]:
        m = r["median_s"]
        lines.append(
            f"| {r['model']} | {r['dtype'].replace('torch.', '')} | {tuple(r['input_shape'])} | {r['rel_error']:.1e} | "
            f"{m['plain'] * 1e3:.3f} ms | {m['encrypted_server_only'] * 1e3:.3f} ms | "
            f"{m['encrypted_round_trip'] * 1e3:.3f} ms | {100 * r['overhead_round_trip']:+.1f}% | "
            f"{r['key_seconds'] * 1e3:.2f} ms | {r['encrypt_seconds'] * 1e3:.2f} ms |")
    lines += [
        "",
        "## Activation-statistics attack: share of secret permutation entries recovered",
        "",
        "Attacker: knows the plain model and public data (the training split); sees the encrypted inputs "
        "and hidden vectors of the victim's first M test queries. Mean over "
        f"{results['config']['n_keys']} keys. Input: only pixels that vary in the public data "
        "(constant pixels are interchangeable).",
        "",
        "| width | test acc | M queries | input pixels | hidden layer 1 | hidden layer 2 | chance (hidden) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["attack"]:
        for m, s in r["success"].items():
            lines.append(f"| {r['width']} | {r['test_accuracy']:.3f} | {m} | {s['input']:.3f} | {s['h0']:.3f} | "
                         f"{s['h1']:.3f} | {r['chance']['h0']:.4f} |")
    return "\n".join(lines) + "\n"


def plot(results: dict) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, g in zip(axes, ("input", "h0", "h1")):
        for r in results["attack"]:
            ms = list(r["success"])
            ax.plot([int(m) for m in ms], [r["success"][m][g] for m in ms], marker="o", label=f"width {r['width']}")
        ax.set_xscale("log")
        ax.set_xlabel("victim queries observed")
        ax.set_ylabel("share of permutation recovered")
        ax.set_title({"input": "input pixels", "h0": "hidden layer 1", "h1": "hidden layer 2"}[g])
        ax.set_ylim(0, 1)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{NAME}.png", dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    log = Progress()
    data = load_digits()
    repeats = 5 if args.quick else 25
    results = {"environment": environment(), "config": {"repeats": repeats, "n_keys": 2 if args.quick else 5},
               "overhead": [], "attack": []}
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        net = MLP(64, (512, 512, 512), 10).to(dtype).eval()
        results["overhead"].append(overhead("MLP 64-512x3-10", net, mlp_spec(net, io=True),
                                            data.x_test.to(dtype), repeats))
        tf = Transformer(8, 128, 4, 32, 256, 2, 10, activation=torch.nn.ReLU).to(dtype).eval()
        x = data.x_test.reshape(-1, 8, 8).to(dtype)  # 8 tokens (image rows) of 8 pixels
        results["overhead"].append(overhead("Transformer d128 h4 2 blocks", tf, transformer_spec(tf, io=True),
                                            x, repeats))
        log(f"overhead {dtype} done")
    config = TrainConfig(epochs=5 if args.quick else 40)
    n_queries = (30, 360) if args.quick else (10, 30, 100, 360)
    for width in ((32,) if args.quick else (32, 128, 512)):
        results["attack"].append(attack(width, data, n_queries, results["config"]["n_keys"], config, log))
    results["environment_end"] = environment()
    print(table(results))
    if not args.quick:
        write_results(NAME, results, table(results))
        plot(results)
    log("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
