"""When several steps fail, each one's error is shown (one paragraph each), not only the first."""

from __future__ import annotations

from tests.helpers import cli


def test_each_failed_step_shows_its_own_error(fake, container_dir):
    # Two independent steps fail for good: the connector (a range Google refuses) and the bucket (a name taken).
    fake.fail(400, api="vpcaccess", method="POST", message="The IP range overlaps a subnet.", times=5)
    fake.foreign_buckets.add("demo-project-mlflow-artifacts")
    result = cli("up")
    assert result.exit_code != 0
    output = " ".join(result.output.split())
    assert "Error in step connector: Google refused the VPC connector" in output
    assert "Error in step bucket: The bucket name demo-project-mlflow-artifacts belongs to another project" in output
    assert output.count("What to do:") >= 2
