"""The device farm: one command measures on many devices at once, on this host or across hosts on Ray.

``plan`` decides what each device measures (``each``: the whole list; ``split``: a group shares it),
``engine`` runs the lanes and is the store's one writer, ``local`` runs lanes as threads on this host
(no Ray needed), ``ray_lanes`` as Ray actors pinned to the host that offers ``device:NAME``, ``join`` and
``status`` are the operator's side of a Ray cluster.
"""
