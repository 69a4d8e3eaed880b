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
// one call only. Every size JavaScript passes is checked here, once per batch,
// in 64-bit arithmetic: count x slot against the slab, each offset + length
// against its buffer, and the lens/offs/addrs arrays against count. A violation
// throws a RangeError (a caller bug, not a runtime condition) and touches no
// memory; nothing is read from or written to outside the caller's buffers.

#include <napi.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <string>

namespace {

constexpr int kMaxBatch = 256;
constexpr int kMaxGsoSegments = 64;   // UDP_MAX_SEGMENTS
constexpr int kMaxGsoBytes = 65000;
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
// TUN_F_USO4/6 (linux/if_tun.h since 6.2; defined here for older headers).
constexpr unsigned long kTunUso4 = 0x20;
constexpr unsigned long kTunUso6 = 0x40;
// Cleared at run time if the kernel refuses UDP_SEGMENT; then every datagram goes out alone.
static std::atomic<bool> g_gso_ok{true};
// Receive scratch for GRO-coalesced datagrams (one per thread: each worker owns its sockets).
thread_local uint8_t t_gro_buf[65536 + 4096];

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

// Waits until fd is readable: 1, 0 on timeout or signal, -errno on error.
int WaitReadable(int fd, int timeoutMs) {
  struct pollfd p = {fd, POLLIN, 0};
  int r = poll(&p, 1, timeoutMs);
  if (r < 0) return errno == EINTR ? 0 : -errno;
  return r;
}

inline int32_t I32(const Napi::CallbackInfo& info, size_t i) { return info[i].As<Napi::Number>().Int32Value(); }
inline Napi::Number Num(const Napi::CallbackInfo& info, double v) { return Napi::Number::New(info.Env(), v); }

// A size argument as a 64-bit integer (NaN and infinities read as 0, fractions truncate): never wraps
// the way a 32-bit conversion of 2^32 + n would.
inline int64_t I64(const Napi::CallbackInfo& info, size_t i) { return info[i].As<Napi::Number>().Int64Value(); }

// Throws a RangeError naming the call and returns false, so callers write `if (!Check(...)) return ...`.
bool Fail(const Napi::CallbackInfo& info, const char* fn, const std::string& why) {
  Napi::RangeError::New(info.Env(), std::string(fn) + ": " + why).ThrowAsJavaScriptException();
  return false;
}

constexpr int64_t kMaxSlot = 1 << 20;

// One check per batch for the slab functions: slot in 1..1 MiB, offset in 0..slot-1, count in
// 0..kMaxBatch, count slots within the slab, and `perSlot` entries of `elemBytes` per slot in each side
// array. All products are of values bounded above, so uint64 arithmetic cannot overflow.
bool CheckSlab(const Napi::CallbackInfo& info, const char* fn, const View& slab, int64_t slot, int64_t off, int64_t count) {
  if (slot < 1 || slot > kMaxSlot) return Fail(info, fn, "slot size " + std::to_string(slot) + " outside 1.." + std::to_string(kMaxSlot));
  if (off < 0 || off >= slot) return Fail(info, fn, "offset " + std::to_string(off) + " outside 0.." + std::to_string(slot - 1));
  if (count < 0 || count > kMaxBatch) return Fail(info, fn, "count " + std::to_string(count) + " outside 0.." + std::to_string(kMaxBatch));
  if ((uint64_t)count * (uint64_t)slot > slab.bytes)
    return Fail(info, fn, std::to_string(count) + " slots of " + std::to_string(slot) + " B exceed the slab of " + std::to_string(slab.bytes) + " B");
  return true;
}

bool CheckArray(const Napi::CallbackInfo& info, const char* fn, const char* what, const View& v, int64_t entries, size_t elemBytes) {
  if ((uint64_t)entries * elemBytes > v.bytes)
    return Fail(info, fn, std::string(what) + " of " + std::to_string(v.bytes) + " B is too small for " + std::to_string(entries) + " entries");
  return true;
}

// tunOpen(name, multiQueue, offload, uso) -> { fd, name, offload, uso } or { fd: -errno }
// With offload, the queue carries a 10-byte virtio_net_hdr before each packet and the kernel may
// hand us TCP/IPv4 segments up to 64 KB (TSO) and packets whose checksum is left to us (CSUM).
// With uso as well, it asks for UDP segmentation offload (kernel 6.2+; Linux takes USO4 only together
// with USO6): UDP super-datagrams both ways. A kernel without it keeps TSO4/CSUM (uso: false).
Napi::Value TunOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  bool multi = info[1].As<Napi::Boolean>().Value();
  bool offload = info.Length() > 2 && info[2].As<Napi::Boolean>().Value();
  bool wantUso = offload && info.Length() > 3 && info[3].As<Napi::Boolean>().Value();
  Napi::Object res = Napi::Object::New(env);
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) { res.Set("fd", -errno); return res; }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (multi ? IFF_MULTI_QUEUE : 0) | (offload ? IFF_VNET_HDR : 0);
  strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int e = errno;
    close(fd);
    res.Set("fd", -e);
    return res;
  }
  bool off = false, uso = false;
  if (offload) {
    int hs = 10;
    unsigned long flags = TUN_F_CSUM | TUN_F_TSO4;
    off = ioctl(fd, TUNSETVNETHDRSZ, &hs) == 0;
    uso = off && wantUso && ioctl(fd, TUNSETOFFLOAD, flags | kTunUso4 | kTunUso6) == 0;
    if (off && !uso) off = ioctl(fd, TUNSETOFFLOAD, flags) == 0;
  }
  res.Set("fd", fd);
  res.Set("name", std::string(ifr.ifr_name));
  res.Set("offload", off);
  res.Set("uso", uso);
  return res;
}

// readBatch(fd, slab, slotSize, offset, lens, max, timeoutMs) -> count | -errno
// Waits up to timeoutMs for the first packet, then drains without blocking.
Napi::Value ReadBatch(const Napi::CallbackInfo& info) {
  int fd = I32(info, 0);
  View slab, lens;
  if (!GetView(info.Env(), info[1], &slab) || !GetView(info.Env(), info[4], &lens)) return Num(info, -EINVAL);
  int64_t slot = I64(info, 2), off = I64(info, 3), max = I64(info, 5);
  int timeout = I32(info, 6);
  if (!CheckSlab(info, "readBatch", slab, slot, off, max) || !CheckArray(info, "readBatch", "lens", lens, max, 4)) return info.Env().Undefined();
  int32_t* len = reinterpret_cast<int32_t*>(lens.data);
  if (timeout != 0) {
    int w = WaitReadable(fd, timeout);
    if (w <= 0) return Num(info, w);
  }
  int n = 0;
  for (; n < max; n++) {
    ssize_t r = read(fd, slab.data + (size_t)n * (size_t)slot + (size_t)off, (size_t)(slot - off));
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR) break;
      if (n == 0) return Num(info, -errno);
      break;
    }
    len[n] = (int32_t)r;
  }
  return Num(info, n);
}

// readArena(fd, arena, offs, lens, maxPkts, timeoutMs) -> count | -errno
// Reads packets one after another into `arena` (each at a 64-byte aligned offset), while a maximal
// packet (64 KB + header) still fits. Used with offload, where one read may be a 64 KB segment.
Napi::Value ReadArena(const Napi::CallbackInfo& info) {
  int fd = I32(info, 0);
  View arena, offs, lens;
  if (!GetView(info.Env(), info[1], &arena) || !GetView(info.Env(), info[2], &offs) || !GetView(info.Env(), info[3], &lens)) return Num(info, -EINVAL);
  int64_t max = I64(info, 4);
  int timeout = I32(info, 5);
  if (max < 0 || max > kMaxBatch) {
    Fail(info, "readArena", "count " + std::to_string(max) + " outside 0.." + std::to_string(kMaxBatch));
    return info.Env().Undefined();
  }
  if (arena.bytes > (size_t)INT32_MAX) {
    Fail(info, "readArena", "arena larger than 2 GiB: offsets would not fit in int32");
    return info.Env().Undefined();
  }
  if (!CheckArray(info, "readArena", "offs", offs, max, 4) || !CheckArray(info, "readArena", "lens", lens, max, 4)) return info.Env().Undefined();
  int32_t* of = reinterpret_cast<int32_t*>(offs.data);
  int32_t* ln = reinterpret_cast<int32_t*>(lens.data);
  if (timeout != 0) {
    int w = WaitReadable(fd, timeout);
    if (w <= 0) return Num(info, w);
  }
  const size_t kMaxPkt = 65536 + 64;
  size_t pos = 0;
  int n = 0;
  while (n < max && pos + kMaxPkt <= arena.bytes) {
    ssize_t r = read(fd, arena.data + pos, kMaxPkt);
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR || n > 0) break;
      return Num(info, -errno);
    }
    of[n] = (int32_t)pos;
    ln[n] = (int32_t)r;
    n++;
    pos = (pos + r + 63) & ~(size_t)63;
  }
  return Num(info, n);
}

// writeArena(fd, buf, base, offs, lens, count) -> packets written | -errno (none written)
// Writes count packets at buf[base + offs[i]] of lens[i] bytes (the TUN GRO output). A packet the
// kernel refused gets lens[i] = -1, so the caller can tell which (a merged one holds many); after a
// hard error the rest are not tried and are marked too.
Napi::Value WriteArena(const Napi::CallbackInfo& info) {
  int fd = I32(info, 0);
  View buf, offs, lens;
  if (!GetView(info.Env(), info[1], &buf) || !GetView(info.Env(), info[3], &offs) || !GetView(info.Env(), info[4], &lens)) return Num(info, -EINVAL);
  int64_t base = I64(info, 2), count = I64(info, 5);
  if (count < 0 || count > kMaxBatch) {
    Fail(info, "writeArena", "count " + std::to_string(count) + " outside 0.." + std::to_string(kMaxBatch));
    return info.Env().Undefined();
  }
  if (base < 0 || (uint64_t)base > buf.bytes) {
    Fail(info, "writeArena", "base " + std::to_string(base) + " outside the buffer of " + std::to_string(buf.bytes) + " B");
    return info.Env().Undefined();
  }
  if (!CheckArray(info, "writeArena", "offs", offs, count, 4) || !CheckArray(info, "writeArena", "lens", lens, count, 4)) return info.Env().Undefined();
  int32_t* of = reinterpret_cast<int32_t*>(offs.data);
  int32_t* ln = reinterpret_cast<int32_t*>(lens.data);
  // Every packet is checked before the first write: offsets are never negative, and base + offset +
  // length (at most 2^53 + 2^32, no overflow in uint64) stays inside the buffer. Length 0 is skipped.
  for (int64_t i = 0; i < count; i++) {
    if (ln[i] == 0) continue;
    if (ln[i] < 0 || of[i] < 0 || (uint64_t)base + (uint64_t)of[i] + (uint64_t)ln[i] > buf.bytes) {
      Fail(info, "writeArena", "packet " + std::to_string(i) + " (offset " + std::to_string(of[i]) + ", length " + std::to_string(ln[i]) +
                                   ") lies outside the buffer of " + std::to_string(buf.bytes) + " B");
      return info.Env().Undefined();
    }
  }
  int written = 0;
  for (int64_t i = 0; i < count; i++) {
    if (ln[i] == 0) continue;
    ssize_t r = write(fd, buf.data + (size_t)base + (size_t)of[i], (size_t)ln[i]);
    if (r < 0) {
      int err = errno;
      ln[i] = -1;
      if (err == EAGAIN || err == EINTR || err == EINVAL || err == EIO) continue;
      for (int64_t j = i + 1; j < count; j++)
        if (ln[j] != 0) ln[j] = -1;
      return Num(info, written > 0 ? written : -err);
    }
    written++;
  }
  return Num(info, written);
}

// writeBatch(fd, slab, slotSize, offset, lens, count) -> packets written | -errno
// Slots whose length is 0 are skipped (the caller dropped them).
Napi::Value WriteBatch(const Napi::CallbackInfo& info) {
  int fd = I32(info, 0);
  View slab, lens;
  if (!GetView(info.Env(), info[1], &slab) || !GetView(info.Env(), info[4], &lens)) return Num(info, -EINVAL);
  int64_t slot = I64(info, 2), off = I64(info, 3), count = I64(info, 5);
  if (!CheckSlab(info, "writeBatch", slab, slot, off, count) || !CheckArray(info, "writeBatch", "lens", lens, count, 4)) return info.Env().Undefined();
  int32_t* len = reinterpret_cast<int32_t*>(lens.data);
  for (int64_t i = 0; i < count; i++) {
    if (len[i] > slot - off) {
      Fail(info, "writeBatch", "length " + std::to_string(len[i]) + " of slot " + std::to_string(i) + " exceeds the slot's " + std::to_string(slot - off) + " B");
      return info.Env().Undefined();
    }
  }
  int written = 0;
  for (int64_t i = 0; i < count; i++) {
    if (len[i] <= 0) continue;
    ssize_t r = write(fd, slab.data + (size_t)i * (size_t)slot + (size_t)off, (size_t)len[i]);
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR || errno == EINVAL || errno == EIO) continue;  // dropped
      return Num(info, written > 0 ? written : -errno);
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
  bool gro = info.Length() > 6 && info[6].As<Napi::Boolean>().Value();
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
  // UDP GRO: the kernel may hand us several datagrams of one flow in one read (split in RecvBatch).
  if (gro) setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof(one));
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
// addrs receives [ip, port] (host order) per slot. A GRO-coalesced read (UDP_GRO cmsg) is split
// back into its datagrams at the segment size the kernel reports; reads continue while a full
// coalesced read (up to 64 datagrams) still fits in the remaining slots.
Napi::Value RecvBatch(const Napi::CallbackInfo& info) {
  int fd = I32(info, 0);
  View slab, lens, addrs;
  if (!GetView(info.Env(), info[1], &slab) || !GetView(info.Env(), info[3], &lens) || !GetView(info.Env(), info[4], &addrs))
    return Num(info, -EINVAL);
  int64_t slot = I64(info, 2), max = I64(info, 5);
  int timeout = I32(info, 6);
  if (!CheckSlab(info, "recvBatch", slab, slot, 0, max) || !CheckArray(info, "recvBatch", "lens", lens, max, 4) ||
      !CheckArray(info, "recvBatch", "addrs", addrs, max, 8))
    return info.Env().Undefined();
  if (timeout != 0) {
    int w = WaitReadable(fd, timeout);
    if (w <= 0) return Num(info, w);
  }
  int32_t* len = reinterpret_cast<int32_t*>(lens.data);
  uint32_t* ad = reinterpret_cast<uint32_t*>(addrs.data);
  int n = 0;
  char control[CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(uint16_t))];
  while (n < max) {
    struct sockaddr_in from;
    struct iovec iov = {t_gro_buf, sizeof(t_gro_buf)};
    struct msghdr mh;
    memset(&mh, 0, sizeof(mh));
    mh.msg_name = &from;
    mh.msg_namelen = sizeof(from);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof(control);
    ssize_t r = recvmsg(fd, &mh, MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR || n > 0) break;
      return Num(info, -errno);
    }
    int seg = (int)r;
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
        int v = 0;
        memcpy(&v, CMSG_DATA(c), c->cmsg_len - CMSG_LEN(0) >= sizeof(int) ? sizeof(int) : sizeof(uint16_t));
        if (v > 0) seg = v;
      }
    }
    uint32_t ip = ntohl(from.sin_addr.s_addr), port = ntohs(from.sin_port);
    for (ssize_t off = 0; off < r && n < max; off += seg) {
      ssize_t l = r - off < seg ? r - off : seg;
      if (l > slot) {
        len[n] = -1;  // larger than any valid message
      } else {
        memcpy(slab.data + (size_t)n * (size_t)slot, t_gro_buf + off, (size_t)l);
        len[n] = (int32_t)l;
      }
      ad[2 * n] = ip;
      ad[2 * n + 1] = port;
      n++;
    }
    if (max - n < kMaxGsoSegments) break;
  }
  return Num(info, n);
}

// sendBatch(fd, slab, slotSize, offset, lens, addrs, count) -> datagrams handed to the kernel | -errno
// Slots with length 0 are skipped. Runs of datagrams to the same destination with the same size
// (the last of a run may be shorter) go out as one UDP GSO send (UDP_SEGMENT); the kernel splits them.
// A full socket buffer drops the rest (UDP semantics; waiting for it to drain measured 12-15% fewer
// 64 B packets delivered): the caller counts the difference between what it handed and the result.
Napi::Value SendBatch(const Napi::CallbackInfo& info) {
  int fd = I32(info, 0);
  View slab, lens, addrs;
  if (!GetView(info.Env(), info[1], &slab) || !GetView(info.Env(), info[4], &lens) || !GetView(info.Env(), info[5], &addrs))
    return Num(info, -EINVAL);
  int64_t slot = I64(info, 2), off = I64(info, 3);
  int64_t count64 = I64(info, 6);
  if (!CheckSlab(info, "sendBatch", slab, slot, off, count64) || !CheckArray(info, "sendBatch", "lens", lens, count64, 4) ||
      !CheckArray(info, "sendBatch", "addrs", addrs, count64, 8))
    return info.Env().Undefined();
  int count = (int)count64;
  int32_t* len = reinterpret_cast<int32_t*>(lens.data);
  uint32_t* ad = reinterpret_cast<uint32_t*>(addrs.data);
  for (int i = 0; i < count; i++) {
    if (len[i] > slot - off) {
      Fail(info, "sendBatch", "length " + std::to_string(len[i]) + " of slot " + std::to_string(i) + " exceeds the slot's " + std::to_string(slot - off) + " B");
      return info.Env().Undefined();
    }
  }
  struct mmsghdr msgs[kMaxBatch];
  struct iovec iov[kMaxBatch];
  struct sockaddr_in to[kMaxBatch];
  int segs[kMaxBatch];
  union { char buf[CMSG_SPACE(sizeof(uint16_t))]; struct cmsghdr align; } ctl[kMaxBatch];
  bool gso = g_gso_ok.load(std::memory_order_relaxed);
  int m = 0, v = 0;
  for (int i = 0; i < count;) {
    if (len[i] <= 0) { i++; continue; }
    int start = i;
    int run = 0, bytes = 0;
    int seg0 = len[start];
    uint32_t dip = ad[2 * start], dport = ad[2 * start + 1];
    int j = start;
    for (; j < count; j++) {
      if (len[j] <= 0) continue;
      if (run > 0) {
        if (!gso || ad[2 * j] != dip || ad[2 * j + 1] != dport || len[j] > seg0 || run >= kMaxGsoSegments || bytes + len[j] > kMaxGsoBytes) break;
      }
      iov[v + run].iov_base = slab.data + (size_t)j * (size_t)slot + (size_t)off;
      iov[v + run].iov_len = len[j];
      bytes += len[j];
      run++;
      if (len[j] < seg0) { j++; break; }  // a shorter datagram ends the run
    }
    memset(&to[m], 0, sizeof(to[m]));
    to[m].sin_family = AF_INET;
    to[m].sin_addr.s_addr = htonl(dip);
    to[m].sin_port = htons((uint16_t)dport);
    memset(&msgs[m].msg_hdr, 0, sizeof(msgs[m].msg_hdr));
    msgs[m].msg_hdr.msg_iov = &iov[v];
    msgs[m].msg_hdr.msg_iovlen = run;
    msgs[m].msg_hdr.msg_name = &to[m];
    msgs[m].msg_hdr.msg_namelen = sizeof(to[m]);
    if (run > 1) {
      msgs[m].msg_hdr.msg_control = ctl[m].buf;
      msgs[m].msg_hdr.msg_controllen = sizeof(ctl[m].buf);
      struct cmsghdr* c = CMSG_FIRSTHDR(&msgs[m].msg_hdr);
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      uint16_t gs = (uint16_t)seg0;
      memcpy(CMSG_DATA(c), &gs, sizeof(gs));
    }
    segs[m] = run;
    v += run;
    m++;
    i = j;
  }
  int sent = 0, done = 0;
  while (done < m) {
    int r = sendmmsg(fd, msgs + done, m - done, MSG_DONTWAIT);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == ENOBUFS) break;
      if ((errno == EIO || errno == EINVAL || errno == EOPNOTSUPP) && segs[done] > 1 && g_gso_ok.load()) {
        // The kernel or device refuses UDP GSO: turn it off for good and send this run one by one.
        g_gso_ok.store(false);
        struct msghdr* h = &msgs[done].msg_hdr;
        for (size_t q = 0; q < h->msg_iovlen; q++) {
          struct msghdr one = *h;
          one.msg_iov = &h->msg_iov[q];
          one.msg_iovlen = 1;
          one.msg_control = nullptr;
          one.msg_controllen = 0;
          if (sendmsg(fd, &one, MSG_DONTWAIT) >= 0) sent++;
        }
        done++;
        continue;
      }
      // Per-destination errors (unreachable, no route) drop one message, not the batch.
      if (errno == ENETUNREACH || errno == EHOSTUNREACH || errno == ECONNREFUSED || errno == EPERM || errno == EINVAL) { done++; continue; }
      return Num(info, sent > 0 ? sent : -errno);
    }
    for (int q = 0; q < r; q++) sent += segs[done + q];
    done += r;
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

// epollCreate() -> epfd | -errno. epollCtl(epfd, add, fd) -> 0 | -errno (add: EPOLLIN; else removes).
// epollWait(epfd, fds, max, timeoutMs) -> count of readable fds written to fds (Int32Array) | -errno.
// The hub's relay watches its many ports from one worker with these (syscalls only).
Napi::Value EpollCreate(const Napi::CallbackInfo& info) {
  int fd = epoll_create1(EPOLL_CLOEXEC);
  return Num(info, fd < 0 ? -errno : fd);
}

Napi::Value EpollCtl(const Napi::CallbackInfo& info) {
  int ep = I32(info, 0);
  bool add = info[1].As<Napi::Boolean>().Value();
  int fd = I32(info, 2);
  struct epoll_event ev;
  memset(&ev, 0, sizeof(ev));
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  int r = epoll_ctl(ep, add ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, fd, &ev);
  return Num(info, r < 0 ? -errno : 0);
}

Napi::Value EpollWait(const Napi::CallbackInfo& info) {
  int ep = I32(info, 0);
  View fds;
  if (!GetView(info.Env(), info[1], &fds)) return Num(info, -EINVAL);
  int64_t max = I64(info, 2);
  int timeout = I32(info, 3);
  if (max < 1 || max > 256) {
    Fail(info, "epollWait", "max " + std::to_string(max) + " is not 1-256");
    return info.Env().Undefined();
  }
  if (!CheckArray(info, "epollWait", "fds", fds, max, 4)) return info.Env().Undefined();
  struct epoll_event evs[256];
  int n = epoll_wait(ep, evs, (int)max, timeout);
  if (n < 0) return Num(info, errno == EINTR ? 0 : -errno);
  int32_t* out = reinterpret_cast<int32_t*>(fds.data);
  for (int i = 0; i < n; i++) out[i] = evs[i].data.fd;
  return Num(info, n);
}

// peerCred(fd) -> { pid, uid, gid } of the process at the other end of a Unix socket (SO_PEERCRED:
// its credentials when it connected), or { pid: -errno }.
Napi::Value PeerCred(const Napi::CallbackInfo& info) {
  Napi::Object res = Napi::Object::New(info.Env());
  struct ucred c;
  socklen_t l = sizeof(c);
  if (getsockopt(I32(info, 0), SOL_SOCKET, SO_PEERCRED, &c, &l) < 0) {
    res.Set("pid", -errno);
    return res;
  }
  res.Set("pid", (double)c.pid);
  res.Set("uid", (double)c.uid);
  res.Set("gid", (double)c.gid);
  return res;
}

// unixDgramSend(path, data) -> bytes sent | -errno: one datagram to a Unix datagram socket (systemd's
// NOTIFY_SOCKET); a path starting with '@' names the abstract namespace. Node's dgram has no AF_UNIX.
Napi::Value UnixDgramSend(const Napi::CallbackInfo& info) {
  std::string p = info[0].As<Napi::String>().Utf8Value();
  std::string data = info[1].As<Napi::String>().Utf8Value();
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof(sa));
  sa.sun_family = AF_UNIX;
  if (p.empty() || p.size() >= sizeof(sa.sun_path)) return Num(info, -EINVAL);
  memcpy(sa.sun_path, p.data(), p.size());
  if (p[0] == '@') sa.sun_path[0] = 0;
  socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + p.size());
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Num(info, -errno);
  ssize_t r = sendto(fd, data.data(), data.size(), MSG_NOSIGNAL, (struct sockaddr*)&sa, len);
  int e = errno;
  close(fd);
  return Num(info, r < 0 ? -e : (double)r);
}

// flock(fd, op) -> 0 | -errno (op: LOCK_SH 1, LOCK_EX 2, LOCK_NB 4, LOCK_UN 8). The kernel drops the
// lock when the last descriptor of its open file closes, also when the process dies.
Napi::Value Flock(const Napi::CallbackInfo& info) {
  return Num(info, flock(I32(info, 0), I32(info, 1)) < 0 ? -errno : 0);
}

// dup2(oldFd, newFd) -> newFd | -errno (used to point stdout/stderr at a freshly rotated log file).
Napi::Value Dup2(const Napi::CallbackInfo& info) {
  int r = dup2(I32(info, 0), I32(info, 1));
  return Num(info, r < 0 ? -errno : r);
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  return Num(info, close(I32(info, 0)) < 0 ? -errno : 0);
}

// The calling thread's name as ps/top -H/perf show it (15 bytes at most). Returns 0 or -errno.
Napi::Value SetThreadName(const Napi::CallbackInfo& info) {
  std::string name = info[0].As<Napi::String>().Utf8Value().substr(0, 15);
  return Num(info, prctl(PR_SET_NAME, name.c_str(), 0, 0, 0) < 0 ? -errno : 0);
}

Napi::Value StrError(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), strerror(I32(info, 0)));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("tunOpen", Napi::Function::New(env, TunOpen));
  exports.Set("readBatch", Napi::Function::New(env, ReadBatch));
  exports.Set("writeBatch", Napi::Function::New(env, WriteBatch));
  exports.Set("readArena", Napi::Function::New(env, ReadArena));
  exports.Set("writeArena", Napi::Function::New(env, WriteArena));
  exports.Set("udpOpen", Napi::Function::New(env, UdpOpen));
  exports.Set("udpLocalPort", Napi::Function::New(env, UdpLocalPort));
  exports.Set("recvBatch", Napi::Function::New(env, RecvBatch));
  exports.Set("sendBatch", Napi::Function::New(env, SendBatch));
  exports.Set("poll2", Napi::Function::New(env, Poll2));
  exports.Set("epollCreate", Napi::Function::New(env, EpollCreate));
  exports.Set("epollCtl", Napi::Function::New(env, EpollCtl));
  exports.Set("epollWait", Napi::Function::New(env, EpollWait));
  exports.Set("peerCred", Napi::Function::New(env, PeerCred));
  exports.Set("dup2", Napi::Function::New(env, Dup2));
  exports.Set("flock", Napi::Function::New(env, Flock));
  exports.Set("unixDgramSend", Napi::Function::New(env, UnixDgramSend));
  exports.Set("close", Napi::Function::New(env, Close));
  exports.Set("strerror", Napi::Function::New(env, StrError));
  exports.Set("setThreadName", Napi::Function::New(env, SetThreadName));
  exports.Set("MAX_BATCH", Napi::Number::New(env, kMaxBatch));
  return exports;
}

}  // namespace

NODE_API_MODULE(enclave_io, Init)
