"""The rows' names and the printed table: p50/p99, throughput, overhead over in-process, gRPC vs REST."""

from __future__ import annotations

TRANSPORTS = (
    "in-process",
    "REST",
    "gRPC",
    "REST baseline",
    "gRPC baseline",
    "gRPC floor",
    "REST h2load",
    "gRPC h2load",
    "gRPC floor h2load",
)


def generator_of(transport: str) -> str:
    return "h2load" if transport.endswith("h2load") else "python"


def rest_reference(transport: str) -> str | None:
    """The REST row a gRPC row is compared with: the same load generator's."""
    if not transport.startswith("gRPC"):
        return None
    if transport.endswith("baseline"):
        return "REST baseline"
    return "REST h2load" if generator_of(transport) == "h2load" else "REST"


def print_table(rows: list[dict]) -> None:
    by_key = {(r["candidates"], r["clients"], r["transport"]): r for r in rows}
    header = (
        f"{'candidates':>11} {'clients':>7} {'transport':>17} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} "
        f"{'+p50 ms':>8} {'p50 x':>6} {'vs REST':>8} {'srv ms/req':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        base = by_key[(r["candidates"], r["clients"], "in-process")]
        added = (r["p50"] - base["p50"]) * 1e3
        ratio = r["p50"] / base["p50"]
        reference = by_key.get((r["candidates"], r["clients"], rest_reference(r["transport"])))
        vs_rest = f"{r['p50'] / reference['p50']:.2f}" if reference else ""
        cpu = f"{r['srv_cpu'] * 1e3:.3f}" if r["srv_cpu"] is not None else ""
        print(
            f"{r['candidates']:>11,} {r['clients']:>7} {r['transport']:>17} {r['p50'] * 1e3:>8.3f} "
            f"{r['p99'] * 1e3:>8.3f} {r['rps']:>8.0f} {added:>8.3f} {ratio:>6.2f} {vs_rest:>8} {cpu:>10}"
        )
    print()
    for r in rows:
        if r["transport"] == "in-process" or "floor" in r["transport"]:
            continue
        base = by_key[(r["candidates"], r["clients"], "in-process")]
        added = (r["p50"] - base["p50"]) * 1e3
        verdict = "meets" if added <= 1.0 else "MISSES"
        print(
            f"{r['transport']:>11} {r['candidates']:>9,} candidates, {r['clients']} client(s): server adds "
            f"{added:.3f} ms at p50 ({verdict} the 1 ms target)"
        )
    for r in rows:
        if not r["transport"].startswith("gRPC") or "floor" in r["transport"]:
            continue
        rest = by_key.get((r["candidates"], r["clients"], rest_reference(r["transport"])))
        if rest is None:
            continue
        print(
            f"{r['transport']} / {rest['transport']} p50 ({generator_of(r['transport'])} clients) at "
            f"{r['candidates']:,} candidates, "
            f"{r['clients']} client(s): {r['p50'] / rest['p50']:.2f} "
            f"({'no slower' if r['p50'] <= rest['p50'] else 'SLOWER'})"
        )
    for r in rows:
        if "floor" not in r["transport"]:
            continue
        base = by_key[(r["candidates"], r["clients"], "in-process")]
        rest = by_key.get((r["candidates"], r["clients"], rest_reference(r["transport"])))
        line = (
            f"floor ({generator_of(r['transport'])} clients) at {r['candidates']:,} candidates, "
            f"{r['clients']} client(s): grpcio alone (canned answer, no model) p50 {r['p50'] * 1e3:.3f} ms, "
            f"{(r['p50'] - base['p50']) * 1e3:+.3f} ms over in-process"
        )
        if rest is not None:
            line += f"; {r['p50'] / rest['p50']:.2f}x the REST p50 with the model ({rest['p50'] * 1e3:.3f} ms)"
            if r["srv_cpu"] is not None and rest["srv_cpu"] is not None:
                line += f"; server CPU {r['srv_cpu'] * 1e3:.3f} ms/req vs REST's {rest['srv_cpu'] * 1e3:.3f}"
        print(line)
    for r in rows:
        if not r["transport"].endswith("baseline"):
            continue
        new = by_key[(r["candidates"], r["clients"], r["transport"].removesuffix(" baseline"))]
        print(
            f"{new['transport']} p50 at {r['candidates']:,} candidates, {r['clients']} client(s): "
            f"{new['p50'] * 1e3:.3f} ms vs the baseline checkout's {r['p50'] * 1e3:.3f} ms "
            f"({(new['p50'] - r['p50']) * 1e3:+.3f} ms)"
        )
