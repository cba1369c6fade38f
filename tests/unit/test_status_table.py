"""The demo's table shows what `kubectl get mdep -o wide` shows."""

from modeldeploy.status_table import format_table


def test_table() -> None:
    objs = [
        {
            "metadata": {"namespace": "default", "name": "b"},
            "status": {"engine": "vllm", "ready": "1/1", "model": {"summary": "Downloading 42%"}},
        },
        {"metadata": {"namespace": "default", "name": "a"}, "status": {"reason": "NoEligibleEngine"}},
    ]
    lines = format_table(objs).splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "ENGINE", "READY", "MODEL", "REASON", "ENDPOINT"]
    assert lines[1].split() == ["default", "a", "<none>", "<none>", "<none>", "NoEligibleEngine", "<none>"]
    assert lines[2].split() == ["default", "b", "vllm", "1/1", "Downloading", "42%", "<none>", "<none>"]
