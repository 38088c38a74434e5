"""Running matchops: the CLI, embedded servers, migrations and the local stack."""
