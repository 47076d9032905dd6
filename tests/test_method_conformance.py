"""Every built-in method passes the shipped conformance suite (tunery.testing.MethodConformance)."""

from tunery.testing import MethodConformance

CASES = {
    "full": ({}, 1e-3),
    "freeze": ({"mode": "last_n", "last_n": 1}, 5e-3),
    "lora": ({"r": 4, "alpha": 8, "dropout": 0.0}, 1e-2),
    "ia3": ({}, 5e-2),
    "prefix": ({"num_virtual_tokens": 4}, 5e-2),
    "ptuning": ({"num_virtual_tokens": 4, "encoder_hidden_size": 32}, 1e-2),
    "prompt": ({"num_virtual_tokens": 4}, 5e-2),
    "adalora": ({"init_r": 4, "target_r": 2}, 1e-2),
    "peft": ({"type": "loha", "r": 4, "target_modules": "all-linear"}, 1e-2),
}

for _name, (_options, _lr) in CASES.items():
    globals()[f"TestConformance_{_name}"] = type(
        f"TestConformance_{_name}", (MethodConformance,), {"method": _name, "options": _options, "learning_rate": _lr})
