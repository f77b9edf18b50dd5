"""A small package of layers, as a project keeps them: imported as ``mylib.layers`` (the README's
``pkg.mod:Name`` targets and the dotted ``layer:`` of ``../swish.yaml``)."""
