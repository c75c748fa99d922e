/* LD_PRELOAD shim for TFF's worker_binary, which has only --port and always listens
 * on the wildcard address [::] (every interface). With TFF_FEDPT_BIND_ADDRESS set,
 * wildcard binds are rewritten to that address (IPv4 addresses become IPv4-mapped
 * IPv6 addresses on the worker's dual-stack socket), so a worker can serve on
 * loopback only. Built on first use by tff_fedpt.remote. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
  static bind_fn real_bind = NULL;
  if (!real_bind) real_bind = (bind_fn)dlsym(RTLD_NEXT, "bind");
  const char *want = getenv("TFF_FEDPT_BIND_ADDRESS");
  if (!want || !addr) return real_bind(fd, addr, len);
  struct in_addr v4;
  struct in6_addr v6;
  int is_v4 = inet_pton(AF_INET, want, &v4) == 1;
  int is_v6 = !is_v4 && inet_pton(AF_INET6, want, &v6) == 1;
  if (!is_v4 && !is_v6) {
    errno = EADDRNOTAVAIL;
    return -1;
  }
  if (addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
    struct sockaddr_in6 a = *(const struct sockaddr_in6 *)addr;
    if (memcmp(&a.sin6_addr, &in6addr_any, sizeof(struct in6_addr)) != 0)
      return real_bind(fd, addr, len);
    if (is_v6) {
      a.sin6_addr = v6;
    } else {
      memset(&a.sin6_addr, 0, sizeof(a.sin6_addr));
      a.sin6_addr.s6_addr[10] = 0xff;
      a.sin6_addr.s6_addr[11] = 0xff;
      memcpy(&a.sin6_addr.s6_addr[12], &v4, 4);
    }
    return real_bind(fd, (const struct sockaddr *)&a, sizeof(a));
  }
  if (addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
    struct sockaddr_in a = *(const struct sockaddr_in *)addr;
    if (a.sin_addr.s_addr != htonl(INADDR_ANY)) return real_bind(fd, addr, len);
    if (!is_v4) {
      errno = EADDRNOTAVAIL;
      return -1;
    }
    a.sin_addr = v4;
    return real_bind(fd, (const struct sockaddr *)&a, sizeof(a));
  }
  return real_bind(fd, addr, len);
}
