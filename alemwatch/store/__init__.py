"""The registry's storage: models, migrations, repositories."""
