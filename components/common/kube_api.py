"""The Kubernetes API client of tbpipe's cluster-bound steps: one way to find credentials.

The train step's worker launcher (``training/launcher``) and the registry's InferenceService
patch (``promotion/inference_service``) both use it; the ``kubernetes`` package is imported
only when a client is made.
"""

from __future__ import annotations

import os

from tbpipe.components.common.errors import TbpipeError


def api_client(purpose: str):  # noqa: ANN201 - kubernetes.client.ApiClient, imported late
    """In-cluster credentials (the step's service account), else the kubeconfig.

    Into a configuration of its own (the client's global default is left alone); the
    kubeconfig is ``$KUBECONFIG`` as it is now, else ``~/.kube/config``.

    Args:
        purpose: What the API is for, for the error line ("start the workers on").

    Raises:
        TbpipeError: neither credentials nor a kubeconfig; one line naming ``purpose``.

    """
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        try:
            config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None,
                                    client_configuration=configuration)
        except (config.ConfigException, OSError) as exc:
            raise TbpipeError(f"no Kubernetes API to {purpose}: neither in-cluster "
                              f"credentials nor a kubeconfig ({exc})") from None
    return client.ApiClient(configuration)
