// Writing a file so that readers only ever see the old file or the complete new one: write to a
// temporary file in the same directory, flush it to disk, then rename over the destination.
// Only a regular file (or no file) is ever replaced: a symlink is followed to the file it names,
// a character device or FIFO (/dev/null, a pipe to another program) is written through, since a
// stream has no old content to keep and replacing it would break whatever else uses it; any
// other kind (folder, socket, block device) is refused by name.
#pragma once

#include <calm/core/error.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <system_error>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace calm::io {

namespace detail {

// `path` with every symlink in its last component followed (a link to a link to a missing file
// names that file), so that a link is never replaced by the file written through it.
inline std::filesystem::path resolve_links(std::filesystem::path path) {
  namespace fs = std::filesystem;
  for (int hops = 0; fs::is_symlink(fs::symlink_status(path)); ++hops) {
    if (hops == 40) throw Error("'" + path.string() + "': too many levels of symbolic links");
    const fs::path target = fs::read_symlink(path);
    path = target.is_absolute() ? target : path.parent_path() / target;
  }
  return path;
}

// What exists at `path` (links followed), for write_atomically: nothing or a regular file is
// replaced, a character device or FIFO is written through, anything else refused by name.
enum class Destination { replace, write_through };
inline Destination destination_kind(const std::filesystem::path& path, const std::string& where) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  switch (st.type()) {
    case fs::file_type::not_found:
    case fs::file_type::regular: return Destination::replace;
    case fs::file_type::character:
    case fs::file_type::fifo: return Destination::write_through;
    case fs::file_type::directory: throw Error(where + "is a folder, not a file");
    case fs::file_type::block: throw Error(where + "is a block device: calm does not write one");
    case fs::file_type::socket: throw Error(where + "is a socket, not a file");
    default:
      throw Error(where + "is not a regular file" + (ec ? ": " + ec.message() : std::string()));
  }
}

}  // namespace detail

// Calls write(FILE*) on a temporary file next to `path`, then renames it to `path`. On any
// failure (including an exception from `write`) the temporary file is removed and `path` is left
// as it was. A symlink is followed; a character device or FIFO is opened and written directly
// (see the top of this file).
inline void write_atomically(const std::filesystem::path& link_or_path,
                             const std::function<void(std::FILE*)>& write) {
  const std::filesystem::path path = detail::resolve_links(link_or_path);
  if (detail::destination_kind(path, "cannot write '" + path.string() + "': ") ==
      detail::Destination::write_through) {
    // O_NONBLOCK for the open only: a FIFO nobody reads is an error (ENXIO), not a hang.
    const int fd = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
      throw Error("cannot open '" + path.string() + "': " +
                  (errno == ENXIO ? "a FIFO that nothing reads" : std::strerror(errno)));
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    std::FILE* f = ::fdopen(fd, "wb");
    if (!f) {
      ::close(fd);
      throw Error("cannot open '" + path.string() + "'");
    }
    try {
      write(f);
    } catch (...) {
      std::fclose(f);
      throw;
    }
    if (std::fclose(f) != 0)
      throw Error("cannot write '" + path.string() + "': " + std::strerror(errno));
    return;
  }
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : ".";
  std::string tmpl = (dir / ("." + path.filename().string() + ".tmp-XXXXXX")).string();
  const int fd = ::mkstemp(tmpl.data());
  if (fd < 0)
    throw Error("cannot create a temporary file in '" + dir.string() + "': " + std::strerror(errno));
  // mkstemp creates 0600; give the file the mode an ordinary create would (0666 less umask).
  const ::mode_t mask = ::umask(0);
  ::umask(mask);
  ::fchmod(fd, 0666 & ~mask);
  std::FILE* f = ::fdopen(fd, "wb");
  if (!f) {
    ::close(fd);
    ::unlink(tmpl.c_str());
    throw Error("cannot open temporary file '" + tmpl + "'");
  }
  try {
    write(f);
    if (std::fflush(f) != 0 || ::fsync(::fileno(f)) != 0)
      throw Error("cannot write '" + path.string() + "': " + std::strerror(errno));
  } catch (...) {
    std::fclose(f);
    ::unlink(tmpl.c_str());
    throw;
  }
  if (std::fclose(f) != 0) {
    ::unlink(tmpl.c_str());
    throw Error("cannot write '" + path.string() + "': " + std::strerror(errno));
  }
  std::error_code ec;
  std::filesystem::rename(tmpl, path, ec);
  if (ec) {
    ::unlink(tmpl.c_str());
    throw Error("cannot rename '" + tmpl + "' to '" + path.string() + "': " + ec.message());
  }
}

// Refuses, before any work is done, an output path that write_atomically could not write or must
// not write: it is empty, its folder is missing, is not a folder or cannot be written, it names a
// folder or another kind of file write_atomically refuses, or it is the same file (by
// std::filesystem::equivalent: links and other spellings included) as one of `inputs`, the files
// the run reads, which writing would replace. `flag` (e.g. "--report") names the setting.
inline void check_writable_destination(const std::filesystem::path& given, const std::string& flag,
                                       const std::vector<std::filesystem::path>& inputs = {}) {
  namespace fs = std::filesystem;
  if (given.empty()) throw Error(flag + " is empty: give the path of a file to write");
  const std::string where = flag + " '" + given.string() + "': ";
  std::error_code ec;
  for (const fs::path& input : inputs)
    if (fs::equivalent(given, input, ec))
      throw Error(where + "is an input of this run ('" + input.string() +
                  "'): writing it would replace what was read");
  const fs::path path = detail::resolve_links(given);
  if (detail::destination_kind(path, where) == detail::Destination::write_through) {
    if (::access(path.c_str(), W_OK) != 0)
      throw Error(where + "cannot be written: " + std::strerror(errno));
    return;
  }
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  if (!fs::exists(dir, ec)) throw Error(where + "the folder '" + dir.string() + "' does not exist");
  if (!fs::is_directory(dir, ec))
    throw Error(where + "'" + dir.string() + "' is not a folder");
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    throw Error(where + "cannot write in the folder '" + dir.string() + "': " +
                std::strerror(errno));
}

// fwrite that throws on a short write (disk full, I/O error).
inline void write_all(std::FILE* f, const void* data, std::size_t n, const std::filesystem::path& path) {
  if (n && std::fwrite(data, 1, n, f) != n)
    throw Error("cannot write '" + path.string() + "': " + std::strerror(errno));
}

}  // namespace calm::io
