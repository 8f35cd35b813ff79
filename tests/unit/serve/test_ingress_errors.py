"""How the ingress answers Ray's own failures: retryable JSON 503s, not 500s or hangs."""
from ray.exceptions import ActorDiedError, ActorUnavailableError
from ray.serve.exceptions import BackPressureError

from ipl.serve.errors import CODES
from ipl.serve.ingress import _unavailable


def test_a_replica_lost_with_its_node_is_a_retryable_503():
    for exc in (ActorDiedError(), ActorUnavailableError("node died", None)):
        err = _unavailable(exc)
        assert err is not None and err.code == "unavailable" and CODES[err.code] == 503
        assert err.retry_after and "retry" in err.message


def test_backpressure_is_overloaded_and_other_errors_are_not_mapped():
    assert _unavailable(BackPressureError(num_queued_requests=3, max_queued_requests=2)).code == "overloaded"
    assert _unavailable(ValueError("a bug")) is None
