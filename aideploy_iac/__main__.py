"""``python -m aideploy_iac <engine address>``: the component provider (see :func:`serve`)."""

from aideploy_iac.package import serve

if __name__ == "__main__":
    serve()
