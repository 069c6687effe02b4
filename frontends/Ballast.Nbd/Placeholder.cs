namespace Ballast.Nbd;
