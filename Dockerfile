# syntax=docker/dockerfile:1
# Build: docker build -t imageposture:dev .   (the tag config/default deploys; see README)
# Then: kind load docker-image imageposture:dev   or   k3d image import imageposture:dev

FROM rust:1-bookworm AS builder
# cmake: aws-lc-sys falls back to it on some targets; cheap insurance for the TLS crypto build.
RUN apt-get update && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin imageposture \
    && cp target/release/imageposture /imageposture

# distroless/cc: glibc + libgcc for the Rust binary, CA certificates, no shell, non-root user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /imageposture /imageposture
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/imageposture"]
CMD ["run"]
