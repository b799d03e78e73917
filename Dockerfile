# kedge in a container image. Placeholder until its issue lands: it builds
# kedge with the same script as everyone else.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY . .
RUN ./scripts/build bin/kedge

FROM debian:bookworm-slim
COPY --from=build /src/bin/kedge /bin/kedge
VOLUME /var/lib/kedge
ENTRYPOINT ["/bin/kedge"]
CMD ["server"]
