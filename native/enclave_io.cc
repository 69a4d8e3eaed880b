// enclave_io: the agent's only native code. Syscalls and nothing else.
//
// Every packet function moves a *batch* between the kernel and a caller-owned
// slab (a Uint8Array, usually over a SharedArrayBuffer) divided into fixed
// slots. Lengths and addresses travel in caller-owned Int32Array/Uint32Array.
// No parsing, routing or crypto happens here; no JS object is allocated per
// packet. Errors come back as negative errno values, never as exceptions, so
// the TypeScript facade (src/native/io.ts) decides what is fatal.
//
// Ownership: the slab, lens and addrs arrays are borrowed for the duration of
// one call only. The TS facade checks every length before calling in.

#include <napi.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

namespace {

constexpr int kMaxBatch = 256;

struct View {
  uint8_t* data = nullptr;
  size_t bytes = 0;
};

// Borrow the memory behind a typed array (ArrayBuffer or SharedArrayBuffer backed).
bool GetView(napi_env env, napi_value v, View* out) {
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  napi_value ab;
  size_t offset = 0;
  if (napi_get_typedarray_info(env, v, &type, &length, &data, &ab, &offset) != napi_ok) return false;
  size_t elem = 1;
  switch (type) {
    case napi_int16_array: case napi_uint16_array: elem = 2; break;
    case napi_int32_array: case napi_uint32_array: case napi_float32_array: elem = 4; break;
    case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: elem = 8; break;
    default: elem = 1;
  }
  out->data = static_cast<uint8_t*>(data);
  out->bytes = length * elem;
  return true;
}

inline int32_t I32(const Napi::CallbackInfo& info, size_t i) { return info[i].As<Napi::Number>().Int32Value(); }
inline Napi::Number Num(const Napi::CallbackInfo& info, double v) { return Napi::Number::New(info.Env(), v); }

// tunOpen(name, multiQueue) -> { fd, name } or { fd: -errno }
Napi::Value TunOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  bool multi = info[1].As<Napi::Boolean>().Value();
  Napi::Object res = Napi::Object::New(env);
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) { res.Set("fd", -errno); return res; }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (multi ? IFF_MULTI_QUEUE : 0);
  strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int e = errno;
    close(fd);
    res.Set("fd", -e);
    return res;
  }
  res.Set("fd", fd);
  res.Set("name", std::string(ifr.ifr_name));
  return res;
}

// readBatch(fd, slab, slotSize, offset, lens, max, timeoutMs) -> count | -errno
// Waits up to timeoutMs for the first packet, then drains without blocking.
Napi::Value ReadBatch(const Napi::CallbackInfo& info) {
  int fd = I32(info, 0);
  View slab, lens;
  if (!GetView(info.Env(), info[1], &slab) || !GetView(info.Env(), info[4], &lens)) return Num(info, -EINVAL);
  int slot = I32(info, 2), off = I32(info, 3), max = I32(info, 5), timeout = I32(info, 6);
  int32_t* len = reinterpret_cast<int32_t*>(lens.data);
  if (timeout != 0) {
    struct pollfd p = {fd, POLLIN, 0};
    int r = poll(&p, 1, timeout);
    if (r < 0) return Num(info, errno == EINTR ? 0 : -errno);
    if (r == 0) return Num(info, 0);
  }
  int n = 0;
  for (; n < max; n++) {
    ssize_t r = read(fd, slab.data + (size_t)n * slot + off, slot - off);
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR) break;
      if (n == 0) return Num(info, -errno);
      break;
    }
    len[n] = (int32_t)r;
  }
  return Num(info, n);
}

// writeBatch(fd, slab, slotSize, offset, lens, count) -> packets written | -errno
// Slots whose length is 0 are skipped (the caller dropped them).
Napi::Value WriteBatch(const Napi::CallbackInfo& info) {
  int fd = I32(info, 0);
  View slab, lens;
  if (!GetView(info.Env(), info[1], &slab) || !GetView(info.Env(), info[4], &lens)) return Num(info, -EINVAL);
  int slot = I32(info, 2), off = I32(info, 3), count = I32(info, 5);
  int32_t* len = reinterpret_cast<int32_t*>(lens.data);
  int written = 0;
  for (int i = 0; i < count; i++) {
    if (len[i] <= 0) continue;
    ssize_t r = write(fd, slab.data + (size_t)i * slot + off, len[i]);
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR || errno == EINVAL || errno == EIO) continue;  // dropped
      return Num(info, -errno);
    }
    written++;
  }
  return Num(info, written);
}

// udpOpen(ip, port, reusePort, rcvbuf, sndbuf, mark) -> fd | -errno  (ip in host order)
Napi::Value UdpOpen(const Napi::CallbackInfo& info) {
  uint32_t ip = info[0].As<Napi::Number>().Uint32Value();
  int port = I32(info, 1);
  bool reuse = info[2].As<Napi::Boolean>().Value();
  int rcv = I32(info, 3), snd = I32(info, 4), mark = I32(info, 5);
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Num(info, -errno);
  int one = 1;
  if (reuse && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) { int e = errno; close(fd); return Num(info, -e); }
  // Prefer the privileged *FORCE variants (we run as root), fall back to the capped ones.
  if (rcv > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof(rcv)) < 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
  if (snd > 0 && setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &snd, sizeof(snd)) < 0) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, sizeof(snd));
  if (mark != 0 && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) < 0) { int e = errno; close(fd); return Num(info, -e); }
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(ip);
  if (bind(fd, (struct sockaddr*)&sa, sizeof(sa)) < 0) { int e = errno; close(fd); return Num(info, -e); }
  return Num(info, fd);
}

// udpLocalPort(fd) -> port | -errno
Napi::Value UdpLocalPort(const Napi::CallbackInfo& info) {
  struct sockaddr_in sa;
  socklen_t l = sizeof(sa);
  if (getsockname(I32(info, 0), (struct sockaddr*)&sa, &l) < 0) return Num(info, -errno);
  return Num(info, ntohs(sa.sin_port));
}

// recvBatch(fd, slab, slotSize, lens, addrs, max, timeoutMs) -> count | -errno
// addrs receives [ip, port] (host order) per slot.
Napi::Value RecvBatch(const Napi::CallbackInfo& info) {
  int fd = I32(info, 0);
  View slab, lens, addrs;
  if (!GetView(info.Env(), info[1], &slab) || !GetView(info.Env(), info[3], &lens) || !GetView(info.Env(), info[4], &addrs))
    return Num(info, -EINVAL);
  int slot = I32(info, 2), max = I32(info, 5), timeout = I32(info, 6);
  if (max > kMaxBatch) max = kMaxBatch;
  if (timeout != 0) {
    struct pollfd p = {fd, POLLIN, 0};
    int r = poll(&p, 1, timeout);
    if (r < 0) return Num(info, errno == EINTR ? 0 : -errno);
    if (r == 0) return Num(info, 0);
  }
  struct mmsghdr msgs[kMaxBatch];
  struct iovec iov[kMaxBatch];
  struct sockaddr_in from[kMaxBatch];
  for (int i = 0; i < max; i++) {
    iov[i].iov_base = slab.data + (size_t)i * slot;
    iov[i].iov_len = slot;
    memset(&msgs[i].msg_hdr, 0, sizeof(msgs[i].msg_hdr));
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_name = &from[i];
    msgs[i].msg_hdr.msg_namelen = sizeof(from[i]);
  }
  int n = recvmmsg(fd, msgs, max, MSG_DONTWAIT, nullptr);
  if (n < 0) return Num(info, (errno == EAGAIN || errno == EINTR) ? 0 : -errno);
  int32_t* len = reinterpret_cast<int32_t*>(lens.data);
  uint32_t* ad = reinterpret_cast<uint32_t*>(addrs.data);
  for (int i = 0; i < n; i++) {
    // A truncated datagram is larger than any valid message: report it as such.
    len[i] = (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) ? -1 : (int32_t)msgs[i].msg_len;
    ad[2 * i] = ntohl(from[i].sin_addr.s_addr);
    ad[2 * i + 1] = ntohs(from[i].sin_port);
  }
  return Num(info, n);
}

// sendBatch(fd, slab, slotSize, offset, lens, addrs, count) -> datagrams handed to the kernel | -errno
// Slots with length 0 are skipped. A full socket buffer drops the rest (UDP semantics).
Napi::Value SendBatch(const Napi::CallbackInfo& info) {
  int fd = I32(info, 0);
  View slab, lens, addrs;
  if (!GetView(info.Env(), info[1], &slab) || !GetView(info.Env(), info[4], &lens) || !GetView(info.Env(), info[5], &addrs))
    return Num(info, -EINVAL);
  int slot = I32(info, 2), off = I32(info, 3), count = I32(info, 6);
  if (count > kMaxBatch) count = kMaxBatch;
  int32_t* len = reinterpret_cast<int32_t*>(lens.data);
  uint32_t* ad = reinterpret_cast<uint32_t*>(addrs.data);
  struct mmsghdr msgs[kMaxBatch];
  struct iovec iov[kMaxBatch];
  struct sockaddr_in to[kMaxBatch];
  int m = 0;
  for (int i = 0; i < count; i++) {
    if (len[i] <= 0) continue;
    iov[m].iov_base = slab.data + (size_t)i * slot + off;
    iov[m].iov_len = len[i];
    memset(&to[m], 0, sizeof(to[m]));
    to[m].sin_family = AF_INET;
    to[m].sin_addr.s_addr = htonl(ad[2 * i]);
    to[m].sin_port = htons((uint16_t)ad[2 * i + 1]);
    memset(&msgs[m].msg_hdr, 0, sizeof(msgs[m].msg_hdr));
    msgs[m].msg_hdr.msg_iov = &iov[m];
    msgs[m].msg_hdr.msg_iovlen = 1;
    msgs[m].msg_hdr.msg_name = &to[m];
    msgs[m].msg_hdr.msg_namelen = sizeof(to[m]);
    m++;
  }
  int sent = 0;
  while (sent < m) {
    int r = sendmmsg(fd, msgs + sent, m - sent, MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == ENOBUFS) break;
      // Per-destination errors (unreachable, no route) drop one datagram, not the batch.
      if (errno == ENETUNREACH || errno == EHOSTUNREACH || errno == ECONNREFUSED || errno == EPERM || errno == EINVAL) { sent++; continue; }
      return Num(info, sent > 0 ? sent : -errno);
    }
    sent += r;
  }
  return Num(info, sent);
}

// poll2(fdA, fdB, timeoutMs) -> bit 1: A readable, bit 2: B readable; 0 on timeout; -errno
Napi::Value Poll2(const Napi::CallbackInfo& info) {
  struct pollfd p[2] = {{I32(info, 0), POLLIN, 0}, {I32(info, 1), POLLIN, 0}};
  int r = poll(p, 2, I32(info, 2));
  if (r < 0) return Num(info, errno == EINTR ? 0 : -errno);
  int mask = 0;
  if (p[0].revents & (POLLIN | POLLERR | POLLHUP)) mask |= 1;
  if (p[1].revents & (POLLIN | POLLERR | POLLHUP)) mask |= 2;
  return Num(info, mask);
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  return Num(info, close(I32(info, 0)) < 0 ? -errno : 0);
}

Napi::Value StrError(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), strerror(I32(info, 0)));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("tunOpen", Napi::Function::New(env, TunOpen));
  exports.Set("readBatch", Napi::Function::New(env, ReadBatch));
  exports.Set("writeBatch", Napi::Function::New(env, WriteBatch));
  exports.Set("udpOpen", Napi::Function::New(env, UdpOpen));
  exports.Set("udpLocalPort", Napi::Function::New(env, UdpLocalPort));
  exports.Set("recvBatch", Napi::Function::New(env, RecvBatch));
  exports.Set("sendBatch", Napi::Function::New(env, SendBatch));
  exports.Set("poll2", Napi::Function::New(env, Poll2));
  exports.Set("close", Napi::Function::New(env, Close));
  exports.Set("strerror", Napi::Function::New(env, StrError));
  exports.Set("MAX_BATCH", Napi::Number::New(env, kMaxBatch));
  return exports;
}

}  // namespace

NODE_API_MODULE(enclave_io, Init)
