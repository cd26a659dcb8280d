# Builds and installs libmgr's C artifacts:
#   make install PREFIX=/opt/mgr
# installs lib/libmgr.so.$(VERSION) (+ libmgr.so.0, libmgr.so symlinks),
# lib/libmgr.a, include/mgr.h and lib/pkgconfig/mgr.pc, so that
#   cc prog.c $(pkg-config --cflags --libs mgr)
# works with PKG_CONFIG_PATH=$(PREFIX)/lib/pkgconfig.

PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
VERSION := 0.1.0
SOMAJOR := 0
CARGO ?= cargo
RELEASE := target/release

.PHONY: all release install uninstall examples

all: release

release:
	$(CARGO) build --release --lib

install: release
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 0755 $(RELEASE)/libmgr.so $(DESTDIR)$(LIBDIR)/libmgr.so.$(VERSION)
	ln -sf libmgr.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libmgr.so.$(SOMAJOR)
	ln -sf libmgr.so.$(SOMAJOR) $(DESTDIR)$(LIBDIR)/libmgr.so
	install -m 0644 $(RELEASE)/libmgr.a $(DESTDIR)$(LIBDIR)/libmgr.a
	install -m 0644 include/mgr.h $(DESTDIR)$(INCLUDEDIR)/mgr.h
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
	    mgr.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/mgr.pc

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libmgr.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libmgr.so.$(SOMAJOR) \
	      $(DESTDIR)$(LIBDIR)/libmgr.so $(DESTDIR)$(LIBDIR)/libmgr.a \
	      $(DESTDIR)$(INCLUDEDIR)/mgr.h $(DESTDIR)$(PKGCONFIGDIR)/mgr.pc

examples:
	$(MAKE) -C c-examples
