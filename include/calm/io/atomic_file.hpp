// Writing a file so that readers only ever see the old file or the complete new one: write to a
// temporary file in the same directory, flush it to disk, then rename over the destination.
#pragma once

#include <calm/core/error.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace calm::io {

// Calls write(FILE*) on a temporary file next to `path`, then renames it to `path`. On any
// failure (including an exception from `write`) the temporary file is removed and `path` is left
// as it was.
inline void write_atomically(const std::filesystem::path& path,
                             const std::function<void(std::FILE*)>& write) {
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

// Refuses, before any work is done, an output path that write_atomically could not write: its
// folder is missing, is not a folder or cannot be written, or the path names a folder. `flag`
// (e.g. "--report") names the setting in the error.
inline void check_writable_destination(const std::filesystem::path& path, const std::string& flag) {
  namespace fs = std::filesystem;
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  const std::string where = flag + " '" + path.string() + "': ";
  std::error_code ec;
  if (!fs::exists(dir, ec)) throw Error(where + "the folder '" + dir.string() + "' does not exist");
  if (!fs::is_directory(dir, ec))
    throw Error(where + "'" + dir.string() + "' is not a folder");
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    throw Error(where + "cannot write in the folder '" + dir.string() + "': " +
                std::strerror(errno));
  if (fs::is_directory(path, ec)) throw Error(where + "is a folder, not a file");
}

// fwrite that throws on a short write (disk full, I/O error).
inline void write_all(std::FILE* f, const void* data, std::size_t n, const std::filesystem::path& path) {
  if (n && std::fwrite(data, 1, n, f) != n)
    throw Error("cannot write '" + path.string() + "': " + std::strerror(errno));
}

}  // namespace calm::io
