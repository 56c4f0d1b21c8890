"""pysandbox-oci: the runtime as an OCI runtime, runc's command line, for Docker, Podman,
containerd (and so Kubernetes through a RuntimeClass).

A second front-end on the same native layer: `spec.load` validates a bundle's config.json
once, before any fork, into a frozen `spec.ContainerPlan` (with `--profile strict` or the
annotation org.pysandbox.profile=strict, `strict.tighten` adds the profile's layers to it);
`container.create` runs the supervisor's half (cgroups, clone, id maps, hooks, state) and the
container's own stage table (`container.CONTAINER_STAGES`, in the order the kernel's rules
impose); `state` keeps each container under --root; `cli` is runc's contract.

Modules: cli (commands and flags), spec (config.json -> plan), rootfs (mounts, devices,
pivot_root, masks), cgroups (v1 and v2 resources, freezer, kill), hooks, state, strict.
"""
