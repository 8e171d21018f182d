// myonode-receiver: the C-STORE receive path on DCMTK's network library (libdcmnet).
//
// Contract (README "Receiving", node/dimse/compiled.py is the Python side):
//
//   myonode-receiver POLICY_FILE
//
// reads the policy myonode wrote from settings.toml (one "key value" per line; lists repeat the key),
// binds the abstract Unix datagram socket `handoff_address`, prints "ready" on stdout and waits. Each
// datagram carries one accepted TCP connection (SCM_RIGHTS) and the peer's address; the dispatcher in
// node/dimse/listener.py has already applied the host allow-list and seen that the association proposes
// storage (and verification) only. It exits when its standard input closes (the node ended, however).
// For each connection, the receiver forks: the child serves that one association
// (both cores work; a crash loses one association) and exits; the parent only waits for the next.
//
// With TLS ([node] tls_*), every connection comes here before its handshake: the child does the handshake
// (DCMTK's dcmtls, the same certificate, key, CA and client-certificate rule), reads the request, keeps a
// storage-only association and relays any other, decrypted, to the node's pynetdicom listener on loopback.
//
// The child applies the policy of node/dimse/listener.py: the called AE title must be ours, the calling
// one on the allow-list, one of `max_associations` slot files held with flock (node/dimse/slots.py, shared
// with the pynetdicom receivers), the peer's own first transfer syntax per presentation context. Each
// C-STORE is written as exactly the journal entry storage/journal.py writes -- temporary file (made ahead,
// while the peer sends the instance) with the same file meta information as node/dimse/filemeta.py,
// fdatasync, rename to <ns>-<pid>-<seq>.<base64url JSON [calling, peer]>.dcm, journal folder fsync -- and
// only then answered 0x0000. The header check answers as node/intake/ingest.py's read_header does: 0xC000
// with its comment for a data set larger than max_instance_bytes (not kept: the rest is read and dropped), a
// deflate bomb, an unreadable one, missing / NUL / over-long UIDs, a SOP Instance UID other than the
// request's, truncated or short pixel data; 0xA700 when the disk refuses. What happens is told to the node as
// one datagram per event on `events_address` (metrics and log lines there), and the indexer is woken on
// `wake_address`.

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcdict.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcistrmb.h"
#include "dcmtk/dcmdata/dcistrmf.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dimse.h"
#include "dcmtk/dcmnet/dcmtrans.h"
#include "dcmtk/dcmnet/dul.h"
#include "dcmtk/dcmtls/tlslayer.h"
#include "dcmtk/oflog/oflog.h"

#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <fstream>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <set>
#include <thread>
#include <string>
#include <poll.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <vector>
#include <zlib.h>

namespace {

const char *const DEFLATED = "1.2.840.10008.1.2.1.99";
const size_t INDEXED_UID_MAX_LENGTH = 128;  // storage/filestore.py
const size_t UID_MAX_LENGTH = 64;
const unsigned long long INFLATION_FLOOR = 64ULL << 20;  // node/intake/ingest.py

struct Policy {
  std::string ae_title;
  std::set<std::string> calling_ae_titles;  // empty: any
  int acse_timeout_s = 30, dimse_timeout_s = 120, network_timeout_s = 120;
  long max_pdu = ASC_MAXIMUMPDUSIZE;
  unsigned long long max_instance_bytes = 1ULL << 30;
  double max_inflation_ratio = 100.0;
  std::string slots_dir;
  int max_associations = 8;
  std::string journal_dir, wake_address, events_address, handoff_address;
  std::string implementation_class_uid, implementation_version_name;
  std::set<std::string> sop_classes;
  std::set<std::string> transfer_syntaxes;
  std::set<std::string> storage_classes;  // every storage class the node knows: what may stay here
  std::string tls_cert, tls_key, tls_ca;
  bool tls_verify_client = false;
  int relay_port = 0;
  std::string relay_token;
};

Policy policy;
std::string peer_address;  // of the association this child serves

std::string trim(const std::string &s) {
  size_t a = s.find_first_not_of(' '), b = s.find_last_not_of(' ');
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

bool read_policy(const char *path, std::string &error) {
  std::ifstream in(path);
  if (!in) {
    error = std::string("cannot read the policy file ") + path;
    return false;
  }
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty() || line[0] == '#') continue;
    size_t space = line.find(' ');
    std::string key = line.substr(0, space), value = space == std::string::npos ? "" : line.substr(space + 1);
    try {
      if (key == "ae_title") policy.ae_title = value;
      else if (key == "calling_ae_title") policy.calling_ae_titles.insert(value);
      else if (key == "acse_timeout_s") policy.acse_timeout_s = std::max(1, (int)std::stod(value));
      else if (key == "dimse_timeout_s") policy.dimse_timeout_s = std::max(1, (int)std::stod(value));
      else if (key == "network_timeout_s") policy.network_timeout_s = std::max(1, (int)std::stod(value));
      else if (key == "max_pdu") policy.max_pdu = std::stol(value);
      else if (key == "max_instance_bytes") policy.max_instance_bytes = std::stoull(value);
      else if (key == "max_inflation_ratio") policy.max_inflation_ratio = std::stod(value);
      else if (key == "slots_dir") policy.slots_dir = value;
      else if (key == "max_associations") policy.max_associations = std::stoi(value);
      else if (key == "journal_dir") policy.journal_dir = value;
      else if (key == "wake_address") policy.wake_address = value;
      else if (key == "events_address") policy.events_address = value;
      else if (key == "handoff_address") policy.handoff_address = value;
      else if (key == "implementation_class_uid") policy.implementation_class_uid = value;
      else if (key == "implementation_version_name") policy.implementation_version_name = value;
      else if (key == "sop_class") policy.sop_classes.insert(value);
      else if (key == "transfer_syntax") policy.transfer_syntaxes.insert(value);
      else if (key == "storage_class") policy.storage_classes.insert(value);
      else if (key == "tls_cert") policy.tls_cert = value;
      else if (key == "tls_key") policy.tls_key = value;
      else if (key == "tls_ca") policy.tls_ca = value;
      else if (key == "tls_verify_client") policy.tls_verify_client = value == "1";
      else if (key == "relay_port") policy.relay_port = std::stoi(value);
      else if (key == "relay_token") policy.relay_token = value;
      else {
        error = std::string(path) + " line " + std::to_string(number) + ": unknown key " + key;
        return false;
      }
    } catch (const std::exception &) {
      error = std::string(path) + " line " + std::to_string(number) + ": " + key + " is not a number: " + value;
      return false;
    }
  }
  if (policy.ae_title.empty() || policy.journal_dir.empty() || policy.handoff_address.empty() ||
      policy.slots_dir.empty() || policy.sop_classes.empty() || policy.transfer_syntaxes.empty()) {
    error = std::string(path) + ": ae_title, journal_dir, handoff_address, slots_dir, sop_class and "
            "transfer_syntax are required";
    return false;
  }
  if (!policy.tls_cert.empty() && (policy.tls_key.empty() || policy.relay_port <= 0 || policy.relay_token.empty())) {
    error = std::string(path) + ": with tls_cert, tls_key, relay_port and relay_token are required";
    return false;
  }
  if (policy.max_pdu <= 0 || policy.max_pdu > ASC_MAXIMUMPDUSIZE) policy.max_pdu = ASC_MAXIMUMPDUSIZE;
  if (policy.max_pdu < ASC_MINIMUMPDUSIZE) policy.max_pdu = ASC_MINIMUMPDUSIZE;
  return true;
}

// --- events to the node (one datagram each; lost when nobody listens, never blocking) -------------------

int events_socket = -1;

sockaddr_un abstract_address(const std::string &name, socklen_t &length) {
  sockaddr_un addr;
  std::memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  size_t n = std::min(name.size(), sizeof(addr.sun_path) - 1);
  std::memcpy(addr.sun_path + 1, name.data(), n);  // sun_path[0] == 0: Linux abstract namespace
  length = (socklen_t)(offsetof(sockaddr_un, sun_path) + 1 + n);
  return addr;
}

void send_to(const std::string &name, const std::string &message) {
  if (name.empty()) return;
  if (events_socket < 0) events_socket = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (events_socket < 0) return;
  socklen_t length;
  sockaddr_un addr = abstract_address(name, length);
  sendto(events_socket, message.data(), message.size(), 0, (sockaddr *)&addr, length);
}

// Events: "stored\t<bytes>\t<seconds>", "refused\t<status hex>\t<calling>\t<peer>\t<comment>",
// "rejected\t<calling>\t<peer>\t<called>\t<why>", "log\t<level>\t<message>".
void event(const std::vector<std::string> &fields) {
  std::string message;
  for (size_t i = 0; i < fields.size(); ++i) {
    if (i) message += '\t';
    for (char c : fields[i]) message += (c == '\t' || c == '\n') ? ' ' : c;
  }
  send_to(policy.events_address, message);
}

void log_event(const char *level, const std::string &message) { event({"log", level, message}); }

// --- the journal entry name (storage/journal.py) ----------------------------------------------------------

std::string json_string(const std::string &s) {  // as Python's json.dumps (ASCII only)
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c == '\b') out += "\\b";
    else if (c == '\f') out += "\\f";
    else if (c < 0x20 || c >= 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else out += (char)c;
  }
  return out + "\"";
}

std::string base64url(const std::string &raw) {  // without padding, as storage/journal.py's _meta
  static const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  size_t i = 0;
  for (; i + 2 < raw.size(); i += 3) {
    unsigned v = ((unsigned char)raw[i] << 16) | ((unsigned char)raw[i + 1] << 8) | (unsigned char)raw[i + 2];
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  if (raw.size() - i == 1) {
    unsigned v = (unsigned char)raw[i] << 16;
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
  } else if (raw.size() - i == 2) {
    unsigned v = ((unsigned char)raw[i] << 16) | ((unsigned char)raw[i + 1] << 8);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
  }
  return out;
}

std::string entry_name(const std::string &calling) {
  static unsigned long seq = 0;
  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  unsigned long long ns = (unsigned long long)now.tv_sec * 1000000000ULL + (unsigned long long)now.tv_nsec;
  std::string meta = "[" + (calling.empty() ? std::string("null") : json_string(calling)) + "," +
                     (peer_address.empty() ? std::string("null") : json_string(peer_address)) + "]";
  char head[64];
  std::snprintf(head, sizeof(head), "%020llu-%d-%08lu", ns, (int)getpid(), ++seq);
  return std::string(head) + "." + base64url(meta) + ".dcm";
}

// --- file meta information, byte for byte as node/dimse/filemeta.py -------------------------------------

void put_element(std::string &out, Uint16 element, const char *vr, const std::string &value) {
  out += (char)0x02;
  out += (char)0x00;
  out += (char)(element & 0xff);
  out += (char)(element >> 8);
  out += vr;
  if (std::strcmp(vr, "OB") == 0) {
    out += std::string("\0\0", 2);
    Uint32 n = (Uint32)value.size();
    for (int i = 0; i < 4; ++i) out += (char)((n >> (8 * i)) & 0xff);
  } else {
    Uint16 n = (Uint16)value.size();
    out += (char)(n & 0xff);
    out += (char)(n >> 8);
  }
  out += value;
}

std::string padded(const std::string &value, char pad) { return value.size() % 2 ? value + pad : value; }

std::string file_meta(const std::string &sop_class, const std::string &sop_instance, const std::string &ts) {
  std::string group;
  put_element(group, 0x0001, "OB", std::string("\0\1", 2));
  put_element(group, 0x0002, "UI", padded(sop_class, '\0'));
  put_element(group, 0x0003, "UI", padded(sop_instance, '\0'));
  put_element(group, 0x0010, "UI", padded(ts, '\0'));
  put_element(group, 0x0012, "UI", padded(policy.implementation_class_uid, '\0'));
  if (!policy.implementation_version_name.empty())
    put_element(group, 0x0013, "SH", padded(policy.implementation_version_name, ' '));
  std::string out(128, '\0');
  out += "DICM";
  std::string length;
  Uint32 n = (Uint32)group.size();
  for (int i = 0; i < 4; ++i) length += (char)((n >> (8 * i)) & 0xff);
  put_element(out, 0x0000, "UL", length);
  return out + group;
}

// --- the journal file as it arrives: bounded, written through one descriptor ------------------------------

// The data set's bytes go to the temporary journal file as its PDVs arrive; beyond max_instance_bytes they
// are counted, not kept, so an instance too large is read to its end, answered 0xC000, and never fills the
// disk. A failed write (disk full) is remembered and the rest read and dropped, so that the peer gets
// 0xA700 on an association that goes on, not an abort.
class JournalFile {
 public:
  static const unsigned long long KEPT_IN_MEMORY = 8ULL << 20;  // the copy the header check reads
  JournalFile(int fd, unsigned long long limit) : fd_(fd), limit_(limit) {}
  void write(const void *buf, unsigned long length) {
    bytes_ += length;
    if (bytes_ <= KEPT_IN_MEMORY) memory_.append((const char *)buf, length);
    else if (!memory_.empty()) std::string().swap(memory_);  // larger: read back from the file
    if (bytes_ > limit_ || error_) return;
    const char *p = (const char *)buf;
    while (length > 0) {
      ssize_t n = ::write(fd_, p, length);
      if (n < 0) {
        if (errno == EINTR) continue;
        error_ = errno;
        return;
      }
      p += n;
      length -= (unsigned long)n;
    }
  }
  unsigned long long bytes() const { return bytes_; }
  int error() const { return error_; }
  bool over() const { return bytes_ > limit_; }
  const std::string *memory() const { return bytes_ <= KEPT_IN_MEMORY ? &memory_ : NULL; }

 private:
  std::string memory_;
  int fd_;
  unsigned long long limit_;
  unsigned long long bytes_ = 0;
  int error_ = 0;
};

// The data set of a C-STORE, PDV by PDV (DIMSE_readNextPDV's steps, from DCMTK's public DUL calls).
// Why not DIMSE_receiveDataSetInFile: it ends the association on a fragment of odd length (a data set
// with an odd-length value, which the field sends and pynetdicom takes); this loop keeps the bytes as sent
// and the header check answers for them.
OFCondition receive_data_set(T_ASC_Association *assoc, T_ASC_PresentationContextID presID, JournalFile &out) {
  for (;;) {
    DUL_PDV pdv;
    OFCondition cond = DUL_NextPDV(&assoc->DULassociation, &pdv);
    if (cond.bad()) {
      if (!ASC_dataWaiting(assoc, policy.dimse_timeout_s)) return DIMSE_NODATAAVAILABLE;
      cond = DUL_ReadPDVs(&assoc->DULassociation, NULL, DUL_NOBLOCK, policy.dimse_timeout_s);
      if (cond != DUL_PDATAPDUARRIVED) return cond.bad() ? cond : DIMSE_READPDVFAILED;
      cond = DUL_NextPDV(&assoc->DULassociation, &pdv);
      if (cond.bad()) return cond;
    }
    if (pdv.pdvType != DUL_DATASETPDV || pdv.presentationContextID != presID) return DIMSE_UNEXPECTEDPDVTYPE;
    if (pdv.fragmentLength > 0) out.write(pdv.data, pdv.fragmentLength);
    if (pdv.lastPDV) return EC_Normal;
  }
}

// --- the header check (node/intake/ingest.py read_header) -----------------------------------------------

struct Refusal {
  Uint16 status = 0;
  std::string comment;
};

Refusal refuse(Uint16 status, const std::string &comment) { return Refusal{status, comment.substr(0, 1024)}; }

// A deflated data set inflates with a bound before the parser inflates it whole.
bool check_inflation(const std::string &path, size_t data_offset, Refusal &refusal) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return true;
  struct stat st;
  fstat(fd, &st);
  unsigned long long compressed = st.st_size > (off_t)data_offset ? (unsigned long long)st.st_size - data_offset : 0;
  unsigned long long bound = std::min(policy.max_instance_bytes,
                                      std::max(INFLATION_FLOOR, (unsigned long long)(compressed * policy.max_inflation_ratio)));
  z_stream zs;
  std::memset(&zs, 0, sizeof(zs));
  inflateInit2(&zs, -MAX_WBITS);
  std::vector<unsigned char> in(1 << 16), out(1 << 20);
  unsigned long long inflated = 0;
  lseek(fd, (off_t)data_offset, SEEK_SET);
  bool ok = true, done = false;
  while (!done && inflated <= bound) {
    ssize_t n = read(fd, in.data(), in.size());
    if (n <= 0) break;
    zs.next_in = in.data();
    zs.avail_in = (uInt)n;
    while (zs.avail_in > 0 && inflated <= bound) {
      zs.next_out = out.data();
      zs.avail_out = (uInt)out.size();
      int rc = inflate(&zs, Z_NO_FLUSH);
      inflated += out.size() - zs.avail_out;
      if (rc == Z_STREAM_END) {
        done = true;
        break;
      }
      if (rc != Z_OK && rc != Z_BUF_ERROR) {
        refusal = refuse(0xC000, std::string("the deflated data set does not inflate: ") + (zs.msg ? zs.msg : "error"));
        ok = false;
        done = true;
        break;
      }
    }
  }
  inflateEnd(&zs);
  close(fd);
  if (ok && inflated > bound) {
    char buf[512];
    std::snprintf(buf, sizeof(buf),
                  "deflate bomb: the deflated data set of %llu bytes inflates beyond %llu bytes ([node] "
                  "max_inflation_ratio %g, max_instance_bytes %llu)",
                  compressed, bound, policy.max_inflation_ratio, policy.max_instance_bytes);
    refusal = refuse(0xC000, buf);
    return false;
  }
  return ok;
}

// A UID that names the file: present, without NUL, at most 128 characters (ingest.py _uid).
bool uid_of(DcmDataset *ds, const DcmTagKey &tag, const char *keyword, std::string &uid, Refusal &refusal) {
  DcmElement *element = NULL;
  char *raw = NULL;
  if (ds->findAndGetElement(tag, element).bad() || element == NULL || element->getString(raw).bad() || raw == NULL) {
    refusal = refuse(0xC000, std::string(keyword) + " is missing or empty");
    return false;
  }
  Uint32 length = element->getLength();
  std::string value(raw, length);
  while (!value.empty() && (value.back() == '\0' || value.back() == ' ')) value.pop_back();
  if (trim(value).empty()) {
    refusal = refuse(0xC000, std::string(keyword) + " is missing or empty");
    return false;
  }
  if (value.find('\0') != std::string::npos) {
    refusal = refuse(0xC000, std::string(keyword) + " '" + value.substr(0, 80) + "' holds a NUL character");
    return false;
  }
  if (value.size() > INDEXED_UID_MAX_LENGTH) {
    refusal = refuse(0xC000, std::string(keyword) + " '" + value.substr(0, 80) + "'... is longer than 128 characters");
    return false;
  }
  uid = value;
  return true;
}

bool native_syntax(const std::string &ts) {
  return ts == "1.2.840.10008.1.2" || ts == "1.2.840.10008.1.2.1" || ts == "1.2.840.10008.1.2.2" || ts == DEFLATED;
}

// The received instance as the checks read it: in memory when it was small enough to keep there (the
// usual case: parsed while the file is being flushed), else from its file.
struct Bytes {
  const std::string *memory = NULL;
  int fd = -1;
  unsigned long long size = 0;
  ssize_t read(void *into, size_t length, unsigned long long at) const {
    if (memory == NULL) return pread(fd, into, length, (off_t)at);
    if (at >= size) return 0;
    size_t n = (size_t)std::min<unsigned long long>(length, size - at);
    std::memcpy(into, memory->data() + at, n);
    return (ssize_t)n;
  }
};

// Pixel data at `at` (where parsing stopped) that ends before its length says, or native pixel data holding
// fewer bytes than its image attributes need (pydicom's get_expected_length): ingest.py _check_pixel_data.
bool check_pixel_data(const Bytes &bytes, offile_off_t at, DcmDataset *ds, const std::string &ts, Refusal &refusal) {
  unsigned long long size = bytes.size;
  unsigned char head[12];
  bool big = ts == "1.2.840.10008.1.2.2", implicit = ts == "1.2.840.10008.1.2";
  auto u16 = [&](const unsigned char *b) { return big ? (Uint16)(b[0] << 8 | b[1]) : (Uint16)(b[1] << 8 | b[0]); };
  auto u32 = [&](const unsigned char *b) {
    return big ? (Uint32)b[0] << 24 | (Uint32)b[1] << 16 | (Uint32)b[2] << 8 | b[3]
               : (Uint32)b[3] << 24 | (Uint32)b[2] << 16 | (Uint32)b[1] << 8 | b[0];
  };
  // DCMTK stops *after* the stop element's tag and length: 12 bytes (explicit VR, long form) or 8 before.
  ssize_t got = 0;
  bool found = false;
  for (offile_off_t back : {12, 8}) {
    if (at < back || (back == 12 && implicit)) continue;
    got = bytes.read(head, sizeof(head), (unsigned long long)(at - back));
    bool long_form = got >= 12 && std::isupper(head[4]) && std::isupper(head[5]) && head[6] == 0 && head[7] == 0;
    if (got >= 8 && u16(head) == 0x7FE0 && (back == 8 || long_form)) {
      at -= back;
      found = true;
      break;
    }
  }
  if (!found) return true;  // no pixel data element: nothing to check
  Uint16 element = u16(head + 2);
  bool upper = std::isupper(head[4]) && std::isupper(head[5]);
  std::string vr((const char *)head + 4, 2);
  static const std::set<std::string> long_vrs = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"};
  Uint32 length;
  unsigned long long start;
  if (implicit || !upper) {
    length = u32(head + 4);
    start = (unsigned long long)at + 8;
  } else if (long_vrs.count(vr)) {
    if (got < 12) {
      refusal = refuse(0xC000, "truncated file: the pixel data element is cut off in its header");
      return false;
    }
    length = u32(head + 8);
    start = (unsigned long long)at + 12;
  } else {
    length = u16(head + 6);
    start = (unsigned long long)at + 8;
  }
  if (length == 0xFFFFFFFF) {  // encapsulated: every item fits and the sequence delimiter comes
    unsigned long long pos = start;
    bool ended = false;
    unsigned char item[8];
    while (pos + 8 <= size && bytes.read(item, 8, pos) == 8) {
      Uint16 g = (Uint16)(item[1] << 8 | item[0]), e = (Uint16)(item[3] << 8 | item[2]);
      Uint32 n = (Uint32)item[7] << 24 | (Uint32)item[6] << 16 | (Uint32)item[5] << 8 | item[4];
      if (g == 0xFFFE && e == 0xE0DD) {
        ended = true;
        break;
      }
      if (g != 0xFFFE || e != 0xE000 || pos + 8 + n > size) break;
      pos += 8 + n;
    }
    if (!ended) refusal = refuse(0xC000, "truncated file: the encapsulated pixel data ends before its sequence delimiter");
    return ended;
  }
  if (start + length > size) {
    char buf[200];
    std::snprintf(buf, sizeof(buf), "truncated file: the pixel data (7FE0,%04X) says %u bytes, the data set holds %llu",
                  element, (unsigned)length, size - start);
    refusal = refuse(0xC000, buf);
    return false;
  }
  if (!native_syntax(ts) || element != 0x0010) return true;
  Uint16 rows = 0, columns = 0, samples = 0, bits = 0;
  if (ds->findAndGetUint16(DCM_Rows, rows).bad() || ds->findAndGetUint16(DCM_Columns, columns).bad() ||
      ds->findAndGetUint16(DCM_SamplesPerPixel, samples).bad() || ds->findAndGetUint16(DCM_BitsAllocated, bits).bad())
    return true;  // attributes missing: nothing to compare with (kept as sent)
  long frames = 1;
  OFString frames_text;
  if (ds->findAndGetOFString(DCM_NumberOfFrames, frames_text).good() && !frames_text.empty())
    frames = std::max(1L, std::atol(frames_text.c_str()));
  unsigned long long pixels = (unsigned long long)rows * columns * (unsigned long long)frames * samples;
  OFString photometric;
  ds->findAndGetOFString(DCM_PhotometricInterpretation, photometric);
  unsigned long long expected = bits == 1 ? (pixels + 7) / 8 : pixels * (bits / 8);
  if (photometric == "YBR_FULL_422") expected = expected / 3 * 2;
  if ((unsigned long long)length < expected) {
    char buf[300];
    std::snprintf(buf, sizeof(buf),
                  "short pixel data: %u bytes; its image attributes (rows, columns, samples, bits, frames, "
                  "photometric interpretation) need %llu", (unsigned)length, expected);
    refusal = refuse(0xC000, buf);
    return false;
  }
  return true;
}

// Parsed up to the pixel data, which is never read (DcmFileFormat::loadFileUntilTag's steps, with the stream
// kept to know where it stopped).
OFCondition parse_until_pixels(DcmFileFormat &file, DcmInputStream &in, offile_off_t &stopped) {
  file.transferInit();
  OFCondition cond = file.readUntilTag(in, EXS_Unknown, EGL_noChange, 4096, DCM_PixelData);
  file.transferEnd();
  stopped = in.tell();
  return cond;
}

bool check_header(const std::string &path, const Bytes &bytes, size_t data_offset, const std::string &ts,
                  const std::string &expected_sop, Refusal &refusal) {
  if (ts == DEFLATED && !check_inflation(path, data_offset, refusal)) return false;
  DcmFileFormat file;
  OFCondition cond;
  offile_off_t stopped = 0;
  if (bytes.memory != NULL) {
    DcmInputBufferStream in;
    in.setBuffer(bytes.memory->data(), (offile_off_t)bytes.memory->size());
    in.setEos();
    cond = parse_until_pixels(file, in, stopped);
    in.releaseBuffer();
  } else {
    DcmInputFileStream in(path.c_str());
    if (in.status().bad()) {
      refusal = refuse(STATUS_STORE_Refused_OutOfResources, std::string("Out of resources: storage error: ") + in.status().text());
      return false;
    }
    cond = parse_until_pixels(file, in, stopped);
  }
  if (cond.bad() && cond != EC_EndOfStream) {
    refusal = refuse(0xC000, std::string("not a readable DICOM data set: ") + cond.text());
    return false;
  }
  DcmDataset *ds = file.getDataset();
  std::string sop_class, sop_uid, study, series;
  if (!uid_of(ds, DCM_SOPClassUID, "SOPClassUID", sop_class, refusal) ||
      !uid_of(ds, DCM_SOPInstanceUID, "SOPInstanceUID", sop_uid, refusal) ||
      !uid_of(ds, DCM_StudyInstanceUID, "StudyInstanceUID", study, refusal) ||
      !uid_of(ds, DCM_SeriesInstanceUID, "SeriesInstanceUID", series, refusal))
    return false;
  // An over-long UID does not fit the request's Affected SOP Instance UID: DCMTK truncates it there.
  bool truncated = sop_uid.size() > UID_MAX_LENGTH && expected_sop == sop_uid.substr(0, UID_MAX_LENGTH);
  if (sop_uid != expected_sop && !truncated) {
    refusal = refuse(0xC000, "SOPInstanceUID " + sop_uid + " in the data set differs from " + expected_sop +
                                 " in the request");
    return false;
  }
  if (ts == DEFLATED) return true;  // positions in a deflated data set are in the inflated stream
  return check_pixel_data(bytes, stopped, ds, ts, refusal);
}

// --- one association --------------------------------------------------------------------------------------

int slot_fd = -1;

bool take_slot() {
  for (int i = 0; i < policy.max_associations; ++i) {
    char name[64];
    std::snprintf(name, sizeof(name), "/association-%03d.lock", i);
    int fd = open((policy.slots_dir + name).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) continue;
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
      slot_fd = fd;  // held until this process exits (the kernel drops it then, even on kill -9)
      return true;
    }
    close(fd);
  }
  return false;
}

bool fsync_folder(const std::string &folder) {
  int fd = open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = fsync(fd) == 0;
  close(fd);
  return ok;
}

// --- the next instance's temporary file, made while the peer sends it --------------------------------------

// Creating a file costs the file system an inode: on this project's test machine (ext4 without a journal,
// whose allocator steps over every inode freed in the last minute) 0.5-0.7 ms of CPU per file, measured
// with perf, more than receiving and answering a 9 KB instance. So the temporary file of the next C-STORE
// is made right after each answer, while the peer reads it and sends its next request, and the next
// C-STORE finds it ready (made beside the flush instead, in a thread or not, it slowed the flush by
// contending for the same inode-table block: measured, dropped). It is the same temporary file as before,
// only made earlier. A spare left by a killed process is an interrupted journal write like any other
// (storage/journal.py sweep_partials removes it once untouched for a minute, by its wall-clock mtime); one
// older than SPARE_FRESH_S is not used, so that an association idle that long never writes into a file the
// sweep may have removed.
struct TempFile {
  int fd = -1;
  std::string path;
  int error = 0;
  time_t made = 0;
};

const time_t SPARE_FRESH_S = 30;
TempFile spare;

TempFile make_temp() {
  TempFile temp;
  std::string pattern = policy.journal_dir + "/.incoming-XXXXXX.part";  // storage/filestore.py PARTIAL_*
  std::vector<char> name(pattern.begin(), pattern.end());
  name.push_back('\0');
  temp.fd = mkostemps(name.data(), 5, O_CLOEXEC);
  if (temp.fd < 0) temp.error = errno;
  else temp.path = name.data();
  temp.made = time(NULL);
  return temp;
}

void drop_spare() {
  if (spare.fd >= 0) {
    close(spare.fd);
    unlink(spare.path.c_str());
  }
  spare = TempFile();
}

void prepare_spare() {
  if (spare.fd < 0) spare = make_temp();  // a failure (disk full) is met again, and answered, by the C-STORE
}

// The spare when it is fresh, else a file made now.
TempFile take_temp() {
  if (spare.fd >= 0 && time(NULL) - spare.made > SPARE_FRESH_S) drop_spare();
  TempFile temp = spare.fd >= 0 ? spare : make_temp();
  spare = TempFile();
  return temp;
}

std::string disk_error(int error) {
  if (error == ENOSPC || error == EDQUOT) return "Out of resources: disk full";
  return std::string("Out of resources: storage error: ") + std::strerror(error);
}

void answer_store(T_ASC_Association *assoc, T_ASC_PresentationContextID presID, T_DIMSE_C_StoreRQ &req,
                  const Refusal &refusal) {
  T_DIMSE_C_StoreRSP rsp;
  std::memset(&rsp, 0, sizeof(rsp));
  rsp.MessageIDBeingRespondedTo = req.MessageID;
  rsp.DimseStatus = refusal.status;
  rsp.DataSetType = DIMSE_DATASET_NULL;
  OFStandard::strlcpy(rsp.AffectedSOPClassUID, req.AffectedSOPClassUID, sizeof(rsp.AffectedSOPClassUID));
  OFStandard::strlcpy(rsp.AffectedSOPInstanceUID, req.AffectedSOPInstanceUID, sizeof(rsp.AffectedSOPInstanceUID));
  rsp.opts = O_STORE_AFFECTEDSOPCLASSUID | O_STORE_AFFECTEDSOPINSTANCEUID;
  DcmDataset detail;
  DcmDataset *detail_ptr = NULL;
  if (refusal.status != STATUS_Success && !refusal.comment.empty()) {
    detail.putAndInsertString(DCM_ErrorComment, refusal.comment.substr(0, 64).c_str());
    detail_ptr = &detail;
  }
  DIMSE_sendStoreResponse(assoc, presID, &req, &rsp, detail_ptr);
}

// Receive one C-STORE data set into a journal entry; returns false when the association cannot go on.
bool store(T_ASC_Association *assoc, T_ASC_PresentationContextID presID, T_DIMSE_C_StoreRQ &req,
           const std::string &calling) {
  timespec started;
  clock_gettime(CLOCK_MONOTONIC, &started);
  T_ASC_PresentationContext pc;
  if (ASC_findAcceptedPresentationContext(assoc->params, presID, &pc).bad()) return false;
  TempFile temp = take_temp();
  int fd = temp.fd;
  if (fd < 0) {
    int error = temp.error;
    JournalFile nowhere(-1, 0);  // read to its end, nothing kept
    if (receive_data_set(assoc, presID, nowhere).bad()) return false;
    answer_store(assoc, presID, req, refuse(STATUS_STORE_Refused_OutOfResources, disk_error(error)));
    log_event("error", "could not store " + std::string(req.AffectedSOPInstanceUID) + ": " + disk_error(error));
    return true;
  }
  std::string tmp = temp.path;
  std::string meta = file_meta(req.AffectedSOPClassUID, req.AffectedSOPInstanceUID, pc.acceptedTransferSyntax);
  JournalFile consumer(fd, policy.max_instance_bytes);
  consumer.write(meta.data(), meta.size());
  OFCondition cond = receive_data_set(assoc, presID, consumer);
  if (cond.bad()) {  // the peer went away mid-instance: nothing acknowledged, nothing kept
    close(fd);
    unlink(tmp.c_str());
    log_event("warning", "C-STORE of " + std::string(req.AffectedSOPInstanceUID) + " from " + calling + " at " +
                             peer_address + " ended mid data set: " + cond.text());
    return false;
  }
  Refusal refusal;
  bool ok = true;
  if (consumer.over()) {
    refusal = refuse(0xC000, std::to_string(consumer.bytes()) + " bytes: larger than [node] max_instance_bytes (" +
                                 std::to_string(policy.max_instance_bytes) + ")");
    ok = false;
  } else if (consumer.error()) {
    refusal = refuse(STATUS_STORE_Refused_OutOfResources, disk_error(consumer.error()));
    ok = false;
  } else {
    // The header is checked while the file is flushed (the flush waits on the disk, the check on the CPU);
    // the answer waits for both.
    int sync_error = 0;
    std::thread flush([&] { sync_error = fdatasync(fd) == 0 ? 0 : errno; });
    Bytes bytes;
    bytes.memory = consumer.memory();
    bytes.fd = fd;
    bytes.size = consumer.bytes();
    ok = check_header(tmp, bytes, meta.size(), pc.acceptedTransferSyntax, req.AffectedSOPInstanceUID, refusal);
    flush.join();
    if (ok && sync_error) {
      refusal = refuse(STATUS_STORE_Refused_OutOfResources, disk_error(sync_error));
      ok = false;
    }
  }
  close(fd);
  std::string final_path;
  if (ok) {
    final_path = policy.journal_dir + "/" + entry_name(calling);
    if (rename(tmp.c_str(), final_path.c_str()) != 0 || !fsync_folder(policy.journal_dir)) {
      refusal = refuse(STATUS_STORE_Refused_OutOfResources, disk_error(errno));
      unlink(final_path.c_str());
      ok = false;
    }
  }
  if (!ok) {
    unlink(tmp.c_str());
    char status[8];
    std::snprintf(status, sizeof(status), "0x%04X", refusal.status);
    event({"refused", status, calling, peer_address, refusal.comment});  // told before the peer hears it
    answer_store(assoc, presID, req, refusal);
    return true;
  }
  send_to(policy.wake_address, "1");
  timespec ended;
  clock_gettime(CLOCK_MONOTONIC, &ended);
  double seconds = (double)(ended.tv_sec - started.tv_sec) + (double)(ended.tv_nsec - started.tv_nsec) / 1e9;
  char took[32];
  std::snprintf(took, sizeof(took), "%.6f", seconds);
  event({"stored", std::to_string(consumer.bytes()), took});  // counted before the peer hears of it
  answer_store(assoc, presID, req, Refusal{STATUS_Success, ""});
  return true;
}

void reject(T_ASC_Association *assoc, T_ASC_RejectParametersResult result, T_ASC_RejectParametersSource source,
            T_ASC_RejectParametersReason reason) {
  T_ASC_RejectParameters rej = {result, source, reason};
  ASC_rejectAssociation(assoc, &rej);
}

// With TLS the node cannot read the association request before the handshake, so every TLS connection
// comes here: storage and verification only stay; anything else is relayed, decrypted, to the node's
// pynetdicom listener on loopback (node/dimse/listener.py RelayServer), which reads the first line
// ("myonode-relay <token> <peer address>") and then serves the A-ASSOCIATE-RQ received here and what follows.
bool storage_only(T_ASC_Association *assoc) {
  int count = ASC_countPresentationContexts(assoc->params);
  if (count == 0) return false;
  for (int i = 0; i < count; ++i) {
    T_ASC_PresentationContext pc;
    ASC_getPresentationContext(assoc->params, i, &pc);
    bool known = policy.storage_classes.count(pc.abstractSyntax) || std::strcmp(pc.abstractSyntax, UID_VerificationSOPClass) == 0;
    if (!known || pc.proposedRole == ASC_SC_ROLE_SCP || pc.proposedRole == ASC_SC_ROLE_SCUSCP) return false;
  }
  return true;
}

bool write_all(int fd, const char *data, size_t length) {
  while (length > 0) {
    ssize_t n = ::write(fd, data, length);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    length -= (size_t)n;
  }
  return true;
}

int relay(T_ASC_Association *assoc, int socket_fd, const char *rq, unsigned long rq_length, const std::string &calling) {
  DcmTransportConnection *peer = DUL_getTransportConnection(assoc->DULassociation);
  int local = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr;
  std::memset(&addr, 0, sizeof(addr));
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)policy.relay_port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (peer == NULL || local < 0 || connect(local, (sockaddr *)&addr, sizeof(addr)) != 0) {
    log_event("error", "association from '" + calling + "' at " + peer_address + " (TLS) could not be passed to "
                       "the node's listener: " + std::strerror(errno));
    if (local >= 0) close(local);
    return 1;
  }
  int one = 1;
  setsockopt(local, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  std::string head = "myonode-relay " + policy.relay_token + " " + peer_address + "\n";
  if (!write_all(local, head.data(), head.size()) || !write_all(local, rq, rq_length)) {
    close(local);
    return 1;
  }
  std::vector<char> buf(1 << 16);
  for (;;) {
    if (!peer->networkDataAvailable(0)) {  // nothing decrypted waiting: wait on both sockets
      pollfd fds[2] = {{socket_fd, POLLIN, 0}, {local, POLLIN, 0}};
      int ready = poll(fds, 2, policy.network_timeout_s * 1000);
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) break;  // idle for [node] network_timeout_s, or an error
      if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
        ssize_t n = ::read(local, buf.data(), buf.size());
        if (n <= 0 || peer->write(buf.data(), (size_t)n) != n) break;
        continue;
      }
      if (!(fds[0].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    }
    ssize_t n = peer->read(buf.data(), buf.size());
    if (n <= 0 || !write_all(local, buf.data(), (size_t)n)) break;
  }
  close(local);
  return 0;
}

int serve(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);  // DCMTK reads blocking, with its own timeouts
  // and no read waits longer than [node] network_timeout_s (a TLS peer that connects and says nothing; a
  // PDU that stops half way), as pynetdicom's network timeout
  timeval limit = {policy.network_timeout_s, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
  dcmExternalSocketHandle.set(fd);
  dcmDisableGethostbyaddr.set(OFTrue);
  T_ASC_Network *net = NULL;
  OFCondition cond = ASC_initializeNetwork(NET_ACCEPTOR, 0, policy.acse_timeout_s, &net);
  if (cond.bad()) {
    log_event("error", std::string("network initialisation failed: ") + cond.text());
    return 1;
  }
  bool tls = !policy.tls_cert.empty();
  if (tls) {  // the same files and rules as node/dimse/listener.py tls_context: TLS 1.2 or later
    DcmTLSTransportLayer *layer = new DcmTLSTransportLayer(NET_ACCEPTOR, NULL, OFTrue);
    if (layer->setPrivateKeyFile(policy.tls_key.c_str(), DCF_Filetype_PEM).bad() ||
        layer->setCertificateFile(policy.tls_cert.c_str(), DCF_Filetype_PEM).bad() ||
        !layer->checkPrivateKeyMatchesCertificate() ||
        (!policy.tls_ca.empty() && layer->addTrustedCertificateFile(policy.tls_ca.c_str(), DCF_Filetype_PEM).bad()) ||
        layer->setTLSProfile(TSP_Profile_BCP195).bad() || layer->activateCipherSuites().bad()) {
      log_event("error", "TLS could not be set up from [node] tls_cert, tls_key, tls_ca");
      delete layer;
      return 1;
    }
    layer->setCertificateVerification(policy.tls_verify_client ? DCV_requireCertificate : DCV_ignoreCertificate);
    ASC_setTransportLayer(net, layer, 1);
  }
  T_ASC_Association *assoc = NULL;
  void *rq = NULL;
  unsigned long rq_length = 0;
  cond = ASC_receiveAssociation(net, &assoc, policy.max_pdu, tls ? &rq : NULL, tls ? &rq_length : NULL, tls,
                                DUL_NOBLOCK, policy.acse_timeout_s);
  if (cond.bad()) {
    if (tls) log_event("warning", "refused connection from " + peer_address + ": TLS handshake failed or no "
                                  "association request: " + cond.text());
    else log_event("warning", "association from " + peer_address + " not received: " + cond.text());
    if (assoc) {
      ASC_dropAssociation(assoc);
      ASC_destroyAssociation(&assoc);
    }
    return 1;
  }
  char calling_raw[65] = {0}, called_raw[65] = {0};
  ASC_getAPTitles(assoc->params, calling_raw, sizeof(calling_raw), called_raw, sizeof(called_raw), NULL, 0);
  std::string calling = trim(calling_raw), called = trim(called_raw);
  if (tls && !storage_only(assoc)) {  // pynetdicom's: it applies the same policy to the request it gets
    int rc = relay(assoc, fd, (const char *)rq, rq_length, calling);
    delete[] (char *)rq;
    ASC_dropAssociation(assoc);
    ASC_destroyAssociation(&assoc);
    ASC_dropNetwork(&net);
    return rc;
  }
  delete[] (char *)rq;
  std::string why;
  if (called != policy.ae_title) {
    why = "called AE title not ours";
    reject(assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER, ASC_REASON_SU_CALLEDAETITLENOTRECOGNIZED);
  } else if (!policy.calling_ae_titles.empty() && !policy.calling_ae_titles.count(calling)) {
    why = "calling AE title not in [node] allowed_calling_ae_titles";
    reject(assoc, ASC_RESULT_REJECTEDPERMANENT, ASC_SOURCE_SERVICEUSER, ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED);
  } else if (!take_slot()) {
    char buf[128];
    std::snprintf(buf, sizeof(buf), "[node] max_associations (%d) reached across listener processes",
                  policy.max_associations);
    why = buf;
    reject(assoc, ASC_RESULT_REJECTEDTRANSIENT, ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED,
           ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED);
  }
  if (!why.empty()) {
    event({"rejected", calling, peer_address, called, why});
    ASC_dropAssociation(assoc);
    ASC_destroyAssociation(&assoc);
    ASC_dropNetwork(&net);
    return 0;
  }
  // Each presentation context: the peer's own first transfer syntax that we accept (node/dimse/negotiation.py).
  int count = ASC_countPresentationContexts(assoc->params);
  for (int i = 0; i < count; ++i) {
    T_ASC_PresentationContext pc;
    ASC_getPresentationContext(assoc->params, i, &pc);
    if (!policy.sop_classes.count(pc.abstractSyntax)) {
      ASC_refusePresentationContext(assoc->params, pc.presentationContextID, ASC_P_ABSTRACTSYNTAXNOTSUPPORTED);
      continue;
    }
    const char *chosen = NULL;
    for (int j = 0; j < pc.transferSyntaxCount && chosen == NULL; ++j)
      if (policy.transfer_syntaxes.count(pc.proposedTransferSyntaxes[j])) chosen = pc.proposedTransferSyntaxes[j];
    if (chosen == NULL) ASC_refusePresentationContext(assoc->params, pc.presentationContextID, ASC_P_TRANSFERSYNTAXESNOTSUPPORTED);
    else ASC_acceptPresentationContext(assoc->params, pc.presentationContextID, chosen);
  }
  ASC_setAPTitles(assoc->params, NULL, NULL, policy.ae_title.c_str());
  // The A-ASSOCIATE-AC names myonode as the file meta information does (DCMTK's own otherwise).
  OFStandard::strlcpy(assoc->params->ourImplementationClassUID, policy.implementation_class_uid.c_str(),
                      sizeof(assoc->params->ourImplementationClassUID));
  OFStandard::strlcpy(assoc->params->ourImplementationVersionName, policy.implementation_version_name.c_str(),
                      sizeof(assoc->params->ourImplementationVersionName));
  cond = ASC_acknowledgeAssociation(assoc);
  if (cond.bad()) {
    log_event("warning", "association from " + calling + " at " + peer_address + " not acknowledged: " + cond.text());
    ASC_dropAssociation(assoc);
    ASC_destroyAssociation(&assoc);
    ASC_dropNetwork(&net);
    return 1;
  }
  prepare_spare();
  bool going = true;
  while (going) {
    T_DIMSE_Message msg;
    T_ASC_PresentationContextID presID = 0;
    cond = DIMSE_receiveCommand(assoc, DIMSE_NONBLOCKING, policy.network_timeout_s, &presID, &msg, NULL);
    if (cond == DUL_PEERREQUESTEDRELEASE) {
      drop_spare();  // before the peer hears the association is over: nothing of it is left in the journal
      ASC_acknowledgeRelease(assoc);
      break;
    }
    if (cond == DUL_PEERABORTEDASSOCIATION) {
      log_event("info", "association from '" + calling + "' at " + peer_address + " aborted");
      break;
    }
    if (cond == DIMSE_NODATAAVAILABLE) {
      log_event("warning", "association from '" + calling + "' at " + peer_address + " idle for " +
                               std::to_string(policy.network_timeout_s) + " s ([node] network_timeout_s): aborted");
      ASC_abortAssociation(assoc);
      break;
    }
    if (cond.bad()) {
      log_event("warning", "association from '" + calling + "' at " + peer_address + " failed: " + cond.text());
      ASC_abortAssociation(assoc);
      break;
    }
    switch (msg.CommandField) {
      case DIMSE_C_ECHO_RQ:
        DIMSE_sendEchoResponse(assoc, presID, &msg.msg.CEchoRQ, STATUS_Success, NULL);
        break;
      case DIMSE_C_STORE_RQ:
        going = store(assoc, presID, msg.msg.CStoreRQ, calling);
        if (!going) ASC_abortAssociation(assoc);
        else prepare_spare();
        break;
      default:  // only storage and verification were accepted: anything else breaks the protocol
        log_event("warning", "association from '" + calling + "' at " + peer_address +
                                 " sent an unexpected DIMSE command: aborted");
        ASC_abortAssociation(assoc);
        going = false;
    }
  }
  drop_spare();
  ASC_dropSCPAssociation(assoc);
  ASC_destroyAssociation(&assoc);
  ASC_dropNetwork(&net);
  return 0;
}

// --- the waiting parent ----------------------------------------------------------------------------------

int receive_connection(int sock, std::string &peer) {
  char payload[256];
  char control[CMSG_SPACE(sizeof(int))];
  iovec iov = {payload, sizeof(payload) - 1};
  msghdr message;
  std::memset(&message, 0, sizeof(message));
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  ssize_t n = recvmsg(sock, &message, MSG_CMSG_CLOEXEC);
  if (n < 0) return -1;
  payload[n] = '\0';
  peer = payload;
  for (cmsghdr *c = CMSG_FIRSTHDR(&message); c != NULL; c = CMSG_NXTHDR(&message, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c), sizeof(int));
      return fd;
    }
  return -1;
}

}  // namespace

int main(int argc, char *argv[]) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s POLICY_FILE\n", argv[0]);
    return 2;
  }
  std::string error;
  if (!read_policy(argv[1], error)) {
    std::fprintf(stderr, "myonode-receiver: %s\n", error.c_str());
    return 2;
  }
  OFLog::configure(OFLogger::FATAL_LOG_LEVEL);  // what matters goes to the node as events
  std::signal(SIGCHLD, SIG_IGN);                 // children reaped by the kernel
  std::signal(SIGPIPE, SIG_IGN);
  if (!dcmDataDict.isDictionaryLoaded()) {  // loaded once here, shared by every child
    std::fprintf(stderr, "myonode-receiver: no DICOM data dictionary\n");
    return 2;
  }
  int sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  socklen_t length;
  sockaddr_un addr = abstract_address(policy.handoff_address, length);
  if (sock < 0 || bind(sock, (sockaddr *)&addr, length) != 0) {
    std::fprintf(stderr, "myonode-receiver: cannot bind @%s: %s\n", policy.handoff_address.c_str(), std::strerror(errno));
    return 2;
  }
  std::printf("ready\n");
  std::fflush(stdout);
  // Gone with the node that started it, even on kill -9: its end of our stdin closes then. (Not
  // PR_SET_PDEATHSIG here: that fires when the *thread* that started us ends, and the node may start us
  // again from an association's thread.)
  pollfd watched[2] = {{sock, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
  for (;;) {
    if (poll(watched, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (watched[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      char byte;
      if (read(STDIN_FILENO, &byte, 1) <= 0) return 0;  // the node is gone
    }
    if (!(watched[0].revents & POLLIN)) continue;
    std::string peer;
    int fd = receive_connection(sock, peer);
    if (fd < 0) {
      if (errno == EINTR || errno == 0) continue;
      std::fprintf(stderr, "myonode-receiver: receiving a connection failed: %s\n", std::strerror(errno));
      continue;
    }
    pid_t pid = fork();
    if (pid == 0) {
      close(sock);
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      std::signal(SIGCHLD, SIG_DFL);
      peer_address = peer;
      _exit(serve(fd));
    }
    if (pid < 0) {
      peer_address = peer;
      log_event("error", std::string("cannot fork for the association from ") + peer + ": " + std::strerror(errno));
    }
    close(fd);
  }
}
