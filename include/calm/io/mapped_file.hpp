// MappedFile: a whole file mapped read-only into memory (POSIX mmap), RAII and move-only.
// Weights are used in place from the mapping, so a checkpoint costs no copy and no
// allocation; the kernel pages them in on first touch.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <utility>

#include "calm/core/error.hpp"

namespace calm::io {

// What a non-regular file is, for error messages.
inline const char* file_kind(::mode_t mode) noexcept {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "a special file";
}

// For files read through a stream rather than MappedFile (prompt and reference files): an
// existing path must be a regular file (after symlinks), so that opening it cannot block on a
// FIFO without a writer. A missing path is left to the caller's open, which reports it.
inline void require_regular_file(const std::filesystem::path& path, const char* what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    throw Error(std::string(what) + " '" + path.string() + "' is not a regular file (it is " +
                file_kind(st.st_mode) + ")");
  }
}

class MappedFile {
 public:
  // Throws calm::Error naming the path if the file cannot be opened, is not a regular file,
  // is empty (mmap cannot map zero bytes, and no calm file format is empty) or cannot be mapped.
  // The file is opened non-blocking, so a FIFO without a writer (or a device that would wait)
  // is refused by the file-type check instead of blocking open() forever; O_NONBLOCK does not
  // change how a regular file is read or mapped.
  explicit MappedFile(const std::filesystem::path& path) : path_(path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) Fail("cannot open", errno);
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      Fail("cannot stat", err);
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      throw Error("'" + path_.string() + "' is not a regular file (it is " + file_kind(st.st_mode) +
                  ")");
    }
    if (st.st_size == 0) {
      ::close(fd);
      throw Error("'" + path_.string() + "' is empty");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    void* addr = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);  // the mapping keeps its own reference to the file
    if (addr == MAP_FAILED) Fail("cannot mmap", err);
    data_ = static_cast<const std::byte*>(addr);
  }

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept
      : path_(std::move(other.path_)),
        data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)) {}
  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      Unmap();
      path_ = std::move(other.path_);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  ~MappedFile() { Unmap(); }

  // The mapping starts on a page boundary, so offsets that are multiples of a dtype's size
  // give pointers aligned for that dtype.
  std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
  std::size_t size() const noexcept { return size_; }
  const std::filesystem::path& path() const noexcept { return path_; }

  // Drops this process's resident pages of `range` (the whole pages inside it) once their bytes
  // have been copied elsewhere, so a checkpoint copied into memory is not resident twice. The
  // mapping is private and never written: a later read of a dropped page reads the same bytes
  // from the file again. Returns false (and drops nothing) for a range outside the mapping.
  bool release_pages(std::span<const std::byte> range) const noexcept {
    const auto [first, last] = whole_pages(range);
    if (first == nullptr) return false;
    if (first < last) ::madvise(first, std::size_t(last - first), MADV_DONTNEED);
    return true;
  }

 private:
  [[noreturn]] void Fail(const char* what, int err) const {
    throw Error(std::string(what) + " '" + path_.string() + "': " + std::strerror(err));
  }
  // The whole pages inside range, or {nullptr, nullptr} when range is not inside the mapping.
  std::pair<std::byte*, std::byte*> whole_pages(std::span<const std::byte> range) const noexcept {
    const auto begin = reinterpret_cast<std::uintptr_t>(range.data());
    const auto base = reinterpret_cast<std::uintptr_t>(data_);
    if (data_ == nullptr || begin < base || range.size() > size_ || begin - base > size_ - range.size())
      return {nullptr, nullptr};
    const long page_size = ::sysconf(_SC_PAGESIZE);
    const std::uintptr_t page = page_size > 0 ? std::uintptr_t(page_size) : 4096;
    const std::uintptr_t end = begin + range.size();
    const std::uintptr_t first = (begin + page - 1) / page * page;
    std::uintptr_t last = end / page * page;
    if (last < first) last = first;
    return {reinterpret_cast<std::byte*>(first), reinterpret_cast<std::byte*>(last)};
  }
  void Unmap() noexcept {
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
    data_ = nullptr;
    size_ = 0;
  }

  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace calm::io
