"""benchmarks/quality.py: its variants are chosen by name, and each reaches the demo's training settings."""

from __future__ import annotations

import pytest
from conftest import load_benchmark

bench = load_benchmark("quality")


def test_variants_are_chosen_by_their_row_names():
    assert [row[0] for row in bench.chosen_variants("all")] == [row[0] for row in bench.VARIANTS]
    chosen = bench.chosen_variants("preset reference, random at iterit's tokens")
    assert [row[0] for row in chosen] == ["iterit, preset reference", "random at iterit's tokens"]
    assert chosen[0][4] == "reference" and chosen[1][5] == {"token_budget": bench.ITERIT_TOKENS}
    with pytest.raises(SystemExit, match="unknown"):
        bench.chosen_variants("pool sideways")


def test_every_variant_names_settings_train_accepts():
    from iterit.training import TrainConfig

    for _, strategy, pool, decay, preset, options in bench.VARIANTS:
        settings = {key: (100 if value == bench.ITERIT_TOKENS else value) for key, value in options.items()}
        config = TrainConfig(model="m", data=["d"], out="o", strategy=strategy, pool=pool, decay=decay, **settings)
        if preset:
            config = TrainConfig.from_preset(preset, model="m", data=["d"], out="o")
        assert config.strategy == strategy
