"""drus.outputs.json_safe: what JSON cannot hold becomes null; keys become strings."""

import json
import math

from drus.outputs import json_safe


def test_json_safe_non_finite_and_keys():
    data = {"a": [1.0, math.nan, (math.inf, -math.inf)], 3: {"b": 2.5, "c": "x"}}
    out = json_safe(data)
    assert out == {"a": [1.0, None, [None, None]], "3": {"b": 2.5, "c": "x"}}
    json.dumps(out, allow_nan=False)  # strict JSON
