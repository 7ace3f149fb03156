# securefastchat in one container: a static binary on an empty image,
# running as an unprivileged user, with its data in a volume.
#
#   docker build -t securefastchat .
#   docker run -d --name sfc -p 7878:7878 -v sfc-data:/data securefastchat
#
# The admin listener (health, metrics, admin API, backups) is off unless
# SFC_ADMIN is set. Its token is SFC_ADMIN_TOKEN, or one the server makes
# in /data/admin.token (which 'docker exec sfc /securefastchat admin ...'
# reads):
#   -e SFC_ADMIN=0.0.0.0:9090 -e SFC_ADMIN_TOKEN=... -p 127.0.0.1:9090:9090

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN VERSION="$VERSION" sh scripts/build-static.sh /out/securefastchat && mkdir -p /out/data

FROM scratch
COPY --from=build /out/securefastchat /securefastchat
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
ENV SFC_LISTEN=0.0.0.0:7878 SFC_DATA=/data SFC_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 7878 9090
HEALTHCHECK --interval=30s --timeout=10s --start-period=15s --retries=3 CMD ["/securefastchat", "health"]
ENTRYPOINT ["/securefastchat"]
CMD ["serve"]
