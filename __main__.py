"""Entry of the aideploy Pulumi component package (``PulumiPlugin.yaml`` beside it).

Pulumi's Python language host runs a source plugin as ``python <plugin directory> <engine
address>`` when the directory holds a ``__main__.py``; without one it would run
``python -m pulumi.run.plugin aideploy``, which looks for components in the ``aideploy``
package, where there are none. This file hands over to ``aideploy_iac``'s provider host. (The
root ``Pulumi.yaml`` runs ``stacks/``; this file is not part of that program.)
"""

from aideploy_iac.package import serve

if __name__ == "__main__":
    serve()
