# The C user's entry point:
#   make                          builds the library and mgrd/mgrctl (release) and
#                                 the C examples against them (c-examples/)
#   make install PREFIX=/opt/mgr  installs lib/libmgr.so.$(VERSION) (+ libmgr.so.0,
#                                 libmgr.so symlinks), lib/libmgr.a, include/mgr.h,
#                                 lib/pkgconfig/mgr.pc and bin/mgrd, bin/mgrctl,
#                                 without debug info
# so that
#   cc prog.c $(pkg-config --cflags --libs mgr)
# works with PKG_CONFIG_PATH=$(PREFIX)/lib/pkgconfig (see README for the run-time
# library path).

PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
BINDIR ?= $(PREFIX)/bin
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
VERSION := 0.1.0
SOMAJOR := 0
CARGO ?= cargo
STRIP ?= strip
RELEASE := target/release

.PHONY: all release install uninstall examples

all: release examples

release:
	$(CARGO) build --release -p libmgr-capi -p mgr-tools --lib --bin mgrd --bin mgrctl
	@# Programs linked against target/release record the SONAME: give it a name there.
	ln -sf libmgr.so $(RELEASE)/libmgr.so.$(SOMAJOR)

install: release
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(BINDIR)
	install -m 0755 $(RELEASE)/mgrd $(RELEASE)/mgrctl $(DESTDIR)$(BINDIR)/
	$(STRIP) --strip-debug $(DESTDIR)$(BINDIR)/mgrd $(DESTDIR)$(BINDIR)/mgrctl
	install -m 0755 $(RELEASE)/libmgr.so $(DESTDIR)$(LIBDIR)/libmgr.so.$(VERSION)
	$(STRIP) --strip-debug $(DESTDIR)$(LIBDIR)/libmgr.so.$(VERSION)
	ln -sf libmgr.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libmgr.so.$(SOMAJOR)
	ln -sf libmgr.so.$(SOMAJOR) $(DESTDIR)$(LIBDIR)/libmgr.so
	install -m 0644 $(RELEASE)/libmgr.a $(DESTDIR)$(LIBDIR)/libmgr.a
	$(STRIP) --strip-debug $(DESTDIR)$(LIBDIR)/libmgr.a
	install -m 0644 include/mgr.h $(DESTDIR)$(INCLUDEDIR)/mgr.h
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
	    mgr.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/mgr.pc

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libmgr.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libmgr.so.$(SOMAJOR) \
	      $(DESTDIR)$(LIBDIR)/libmgr.so $(DESTDIR)$(LIBDIR)/libmgr.a \
	      $(DESTDIR)$(INCLUDEDIR)/mgr.h $(DESTDIR)$(PKGCONFIGDIR)/mgr.pc \
	      $(DESTDIR)$(BINDIR)/mgrd $(DESTDIR)$(BINDIR)/mgrctl

examples: release
	$(MAKE) -C c-examples LIBDIR=$(abspath $(RELEASE))
