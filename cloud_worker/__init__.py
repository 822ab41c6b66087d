"""The cloud side: gRPC inference workers for the remote half of a bundle, managed by Ray.

`server.create_server` builds one worker's grpc.aio server (usable without Ray);
`service.CloudService` runs N of them as Ray actors; `cli` is `agilenn cloud serve`.
Nothing here imports torch.
"""
